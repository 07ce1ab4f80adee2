import type { RamDescriptor } from '../memory/ram.js';
import type { BootSpec } from '../machine.js';
import type { VirtioDeviceSpec } from '../devices/virtio/device-spec.js';
import type { VsockRings } from '../devices/virtio/vsock.js';

/** How a worker starts: a fresh boot from an image, or a restored machine state. */
export type VcpuStart =
  | { readonly kind: 'boot'; readonly boot: BootSpec }
  | { readonly kind: 'restore'; readonly state: Uint8Array }
  /** A thread that is up and compiled but holds no machine yet: a migration destination
   * starts one at reservation so that loading the state later costs no thread start-up. */
  | { readonly kind: 'standby' };

export interface VcpuWorkerData {
  readonly ram: RamDescriptor;
  readonly start: VcpuStart;
  /** Start running at once (true) or wait paused for the first resume (false). */
  readonly running: boolean;
  /** virtio devices of the machine (also for standby starts: the state to load must match them). */
  readonly devices?: readonly VirtioDeviceSpec[];
  /** The vsock device's packet rings, created by the host thread with the VM. */
  readonly vsockRings?: VsockRings;
  /** The VM's name, for the worker's log lines. */
  readonly name?: string;
}

/**
 * A spare thread's start (VcpuThread.spawn): no machine; with `boot`, it first runs that guest on
 * a throwaway machine for up to `ms`, so the CPU loop has type feedback for every instruction
 * path that guest takes before a real VM needs the thread.
 */
export interface VcpuTraining {
  readonly train: {
    readonly boot: BootSpec;
    readonly ramBytes: number;
    readonly devices: readonly VirtioDeviceSpec[];
    readonly ms: number;
    /**
     * An Int32 the host sets non-zero while it wants the CPU back (a migration runs there): the
     * training waits between slices, its guest clock stopped, and `ms` counts only the running.
     */
    readonly hold?: SharedArrayBuffer;
  };
}

/** Host thread -> vCPU thread (processed while the vCPU is paused or between slices). */
export type ToVcpu =
  | { readonly type: 'resume' }
  | { readonly type: 'step'; readonly id: number; readonly count: number }
  /** pausing: sent with a pause (Vcpu.pauseAndSave): stop at the boundary the handler runs at if not yet stopped. */
  /** `consoleFrom`: the state's console section starts at this position of the output (Machine.saveState). */
  | { readonly type: 'save'; readonly id: number; readonly pausing?: boolean; readonly consoleFrom?: number }
  | { readonly type: 'input'; readonly data: Uint8Array }
  | { readonly type: 'stats'; readonly id: number }
  /** `console`: history sent ahead of the state (migration's CONSOLE frames), joined in front of the state's (ConsoleLog.join). */
  | { readonly type: 'restore'; readonly id: number; readonly state: Uint8Array; readonly console?: { readonly end: number; readonly bytes: Uint8Array } }
  /** Post an event on the vsock event queue (VsockHostPort.postEvent). */
  | { readonly type: 'vsock-event'; readonly id: number }
  /** Drop the machine (paused or stopped) and keep the thread for another one ('retired'). */
  | { readonly type: 'retire' }
  /** A retired thread: build and start this machine, as a new thread would ('ready' / 'start-failed'). */
  | { readonly type: 'init'; readonly data: VcpuWorkerData };

export interface VcpuStats {
  readonly instret: number;
  readonly pc: number;
  readonly mtime: number;
  readonly state: number;
}

/** vCPU thread -> host thread. */
export type FromVcpu =
  | { readonly type: 'ready'; readonly console: Uint8Array; readonly consoleTotal: number }
  | { readonly type: 'console'; readonly data: Uint8Array }
  | { readonly type: 'exit'; readonly code: number }
  | { readonly type: 'stepped'; readonly id: number; readonly executed: number }
  | { readonly type: 'saved'; readonly id: number; readonly state: Uint8Array }
  | { readonly type: 'restored'; readonly id: number; readonly console: Uint8Array; readonly consoleTotal: number }
  | { readonly type: 'stats'; readonly id: number; readonly stats: VcpuStats }
  | { readonly type: 'failed'; readonly id: number; readonly message: string }
  | { readonly type: 'crash'; readonly message: string; readonly stack: string }
  | { readonly type: 'start-failed'; readonly name: string; readonly message: string }
  | { readonly type: 'retired' };
