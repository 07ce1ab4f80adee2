import { TIMEBASE_HZ } from './memory/layout.js';

/**
 * The guest's virtual clock (mtime, 10 MHz). It follows wall time while the VM runs, stands
 * still while it is paused, and its value travels with the VM, so guest time never goes back.
 * It jumps forward only when the host says so (advance): a migration may count its switchover
 * pause as guest time (docs/precopy.md, guest time across the switchover).
 */
export class VirtualClock {
  private baseTicks = 0;
  private startedAtMs = 0;
  private running = false;
  private readonly now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.now = now;
  }

  /** Current mtime in ticks (an integer-valued double; exact up to 2^53). */
  ticks(): number {
    if (!this.running) return this.baseTicks;
    return this.baseTicks + Math.floor((this.now() - this.startedAtMs) * (TIMEBASE_HZ / 1000));
  }

  get isRunning(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.startedAtMs = this.now();
    this.running = true;
  }

  stop(): void {
    if (!this.running) return;
    this.baseTicks = this.ticks();
    this.running = false;
  }

  /** Sets the clock (restoring a VM). The clock keeps its running/stopped state. */
  set(ticks: number): void {
    this.baseTicks = ticks;
    this.startedAtMs = this.now();
  }

  /** Moves the clock forward by `ticks` (a non-negative integer), running or not. */
  advance(ticks: number): void {
    if (ticks > 0) this.baseTicks += ticks;
  }

  /** Milliseconds of wall time until the clock reads `ticks` (0 if past). */
  msUntil(ticks: number): number {
    const d = ticks - this.ticks();
    return d <= 0 ? 0 : d / (TIMEBASE_HZ / 1000);
  }
}
