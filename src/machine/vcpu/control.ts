/** Values of Sig.Command: what the host thread asks of the vCPU thread. */
export const enum VcpuCommand {
  Run = 0,
  Pause = 1,
  Stop = 2,
}

/** Values of Sig.State: what the vCPU thread is doing. */
export const enum VcpuState {
  Starting = 0,
  Running = 1,
  Paused = 2,
  /** The guest powered off (or failed through sifive_test); the machine can still be inspected. */
  Exited = 3,
  /** Paused while an instruction waits for an absent page (post-copy). */
  PausedInFault = 4,
  /** The worker hit an internal error. */
  Crashed = 5,
}

export function vcpuStateName(s: number): string {
  switch (s) {
    case VcpuState.Starting: return 'starting';
    case VcpuState.Running: return 'running';
    case VcpuState.Paused: return 'paused';
    case VcpuState.Exited: return 'exited';
    case VcpuState.PausedInFault: return 'paused-in-fault';
    case VcpuState.Crashed: return 'crashed';
    default: return `unknown(${s})`;
  }
}
