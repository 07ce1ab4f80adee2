import type { VcpuThread } from '../machine/vcpu/vcpu.js';

/**
 * vCPU threads of VMs that left this host (migrated away, deleted), kept by the image they ran
 * for the next VM of that image: an incoming migration's standby thread or a new VM. A thread
 * runs its first guest instructions slowly while V8 compiles the CPU loop (a few percent of full
 * speed for 100–200 ms); one that ran the same image starts at full speed, so a VM moving back
 * and forth does not run slowly after every switchover. Threads are kept per image only: code
 * compiled for another guest's instruction mix is not faster, and can be slower, than a new one.
 * Bounded: the oldest thread beyond the cap is ended.
 */
export class ThreadPool {
  private readonly idle: { image: string; thread: VcpuThread }[] = [];

  /** `max` 0 keeps none. */
  constructor(readonly max: number) {}

  /** Threads held. */
  get size(): number {
    this.prune();
    return this.idle.length;
  }

  /** Keeps `thread`, which last ran `image` (a digest); ends the oldest beyond the cap. */
  put(image: string, thread: VcpuThread): void {
    this.prune();
    this.idle.push({ image, thread });
    while (this.idle.length > this.max) void this.idle.shift()!.thread.terminate();
  }

  /** A thread that ran `image`, or undefined. */
  take(image: string): VcpuThread | undefined {
    this.prune();
    const i = this.idle.findIndex((t) => t.image === image);
    if (i < 0) return undefined;
    return this.idle.splice(i, 1)[0]!.thread;
  }

  /** Ends every thread held (daemon shutdown). */
  async close(): Promise<void> {
    const all = this.idle.splice(0);
    await Promise.allSettled(all.map((t) => t.thread.terminate()));
  }

  private prune(): void {
    for (let i = this.idle.length - 1; i >= 0; i--) if (!this.idle[i]!.thread.usable) this.idle.splice(i, 1);
  }
}
