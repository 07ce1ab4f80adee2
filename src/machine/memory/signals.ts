/**
 * A small shared Int32Array through which the host thread and a VM's vCPU thread signal each
 * other with Atomics. Slot meanings are fixed here so every layer agrees on them.
 */
export const enum Sig {
  /** Bumped (Atomics.add + notify) by anything that should wake a sleeping vCPU. */
  Doorbell = 0,
  /** Page number an absent-page access is waiting for, or -1. */
  FaultPage = 1,
  /** Bumped each time the vCPU reports an absent-page access; the host waits on it. */
  FaultSeq = 2,
  /** Host's command to the vCPU thread (VcpuCommand in vcpu/control.ts). */
  Command = 3,
  /** vCPU thread's current state (VcpuState in vcpu/control.ts). */
  State = 4,
  /** Dirty logging requested by the host: epoch number, odd = on, even = off. */
  DirtyRequest = 5,
  /** Last dirty-log epoch the vCPU applied. */
  DirtyAck = 6,
  /** Throttle: percent of wall time the vCPU sleeps (0..99). */
  Throttle = 7,
  /** Instructions left for single-step, or 0. */
  StepBudget = 8,
  /** Presence checking requested (1) or not (0): on while any page may be absent. */
  PresenceOn = 9,
  /** virtio-vsock: bumped (and notified) each time the device appends packets to the guest→host ring. */
  VsockToHost = 10,
  /** virtio-vsock: bumped each time the device takes packets from the host→guest ring (space freed). */
  VsockToGuestTaken = 11,
  /** virtio-balloon: the host's target size in 4 KiB pages (config num_pages). */
  BalloonTarget = 12,
  /** virtio-balloon: the guest's last written config `actual` (mirrored by the device). */
  BalloonActual = 13,
  /** virtio-balloon: free page hint command id (u32 bits) the host asks for, or the device's current one. */
  HintCmdId = 14,
  /** virtio-balloon: host's free page hint command, (sequence << 2) | HintCommand. */
  HintCommand = 15,
  /** virtio-balloon: the driver as the device sees it, BalloonDriverBits (published by the device). */
  BalloonDriver = 16,
  /**
   * The guest clock counts from this instant at the next resume: CLOCK_MONOTONIC in µs modulo
   * CLOCK_WRAP_US, written by the host with the Run command and taken (reset to -1) by the vCPU
   * thread as it starts the clock, which first moves forward by the time since. -1: resume where
   * it stopped. A migration's destination sets it to when the source paused the VM.
   */
  ClockResumeFrom = 17,
  /** When the vCPU thread last stopped the guest clock: CLOCK_MONOTONIC in µs modulo CLOCK_WRAP_US. */
  ClockStoppedAt = 18,
  Count = 19,
}

/** Bits of Sig.BalloonDriver. */
export const enum BalloonDriverBits {
  /** DRIVER_OK is set and the device works: the guest driver follows targets. */
  Live = 1,
  /** The driver accepted VIRTIO_BALLOON_F_FREE_PAGE_HINT. */
  FreePageHint = 2,
  /** Bits 2..3: the device's free page hint state (HintState in balloon.ts). */
  HintStateShift = 2,
  /** Bits 4..31: the sequence number (mod 2^28) of the last host hint command the device applied. */
  AppliedShift = 4,
  AppliedMask = 0x0fff_ffff,
}

/** Instants in Sig.ClockResumeFrom and Sig.ClockStoppedAt wrap at 2^31 µs (about 35 minutes). */
export const CLOCK_WRAP_US = 0x8000_0000;

export function allocateSignals(): Int32Array {
  const s = new Int32Array(new SharedArrayBuffer(Sig.Count * 4));
  s[Sig.FaultPage] = -1;
  s[Sig.ClockResumeFrom] = -1;
  return s;
}

/** `nowUs` − `stored`, for a `stored` instant taken modulo CLOCK_WRAP_US at most one wrap ago. */
export function wrappedAgeUs(nowUs: number, stored: number): number {
  return (((nowUs % CLOCK_WRAP_US) - stored) % CLOCK_WRAP_US + CLOCK_WRAP_US) % CLOCK_WRAP_US;
}

export function ring(signals: Int32Array): void {
  Atomics.add(signals, Sig.Doorbell, 1);
  Atomics.notify(signals, Sig.Doorbell);
}
