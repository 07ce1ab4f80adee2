import type { VcpuTraining } from '../machine/vcpu/messages.js';
import { VcpuThread } from '../machine/vcpu/vcpu.js';

/**
 * After the spare is taken, a new one starts this much later, and only while no migration runs
 * here (else it waits as long again): starting a thread is 100-200 ms of CPU, which inside a
 * migration's pre-copy delays the daemon's relay of its VMs' traffic.
 */
const SPARE_REFILL_MS = 2_000;
/** How often a training spare is told whether a migration runs (VcpuTraining hold). */
const HOLD_POLL_MS = 10;

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
  /**
   * One new thread started ahead of need (startSpare), for a VM with no thread of its image
   * here: a new thread needs 100-200 ms to load its code before it can run a machine, which on
   * an incoming migration delays the guest-image warm-up and leaves it cut short by the switchover.
   */
  private spare: VcpuThread | undefined;
  private spawning = false;
  private spareWanted = false;
  private refill: NodeJS.Timeout | undefined;
  private closed = false;

  /** `max` 0 keeps none. */
  constructor(readonly max: number) {}

  /** Whether the host is busy with a migration (the refill waits for a quiet moment); set by startSpare. */
  private busy: () => boolean = () => false;

  /** What each spare runs first (VcpuThread.spawn), if anything. */
  private training: VcpuTraining['train'] | undefined;

  /**
   * Keeps one spare thread from now on, started now and again after each is taken (once `busy`
   * says no migration runs). `training`: a guest each spare runs first on a throwaway machine.
   */
  startSpare(busy: () => boolean, training?: VcpuTraining['train']): void {
    this.spareWanted = true;
    this.busy = busy;
    this.training = training;
    this.spawnSpare();
  }

  /** Spare threads ready (0 or 1). */
  get spares(): number {
    return this.spare?.usable === true ? 1 : 0;
  }

  /** The spare thread, if one is ready; a new one starts a little later. */
  takeSpare(): VcpuThread | undefined {
    const t = this.spare;
    this.spare = undefined;
    if (this.spareWanted) this.scheduleRefill();
    return t?.usable === true ? t : undefined;
  }

  private scheduleRefill(): void {
    if (this.closed || this.refill !== undefined) return;
    this.refill = setTimeout(() => {
      this.refill = undefined;
      if (this.busy()) this.scheduleRefill();
      else this.spawnSpare();
    }, SPARE_REFILL_MS);
    this.refill.unref();
  }

  private spawnSpare(): void {
    if (this.closed || this.spawning || this.spare?.usable === true) return;
    this.spawning = true;
    // The training holds while a migration runs here (a refill that began in a quiet moment
    // took a core through the next migration's round 1: measured, 248 ms against 107 ms).
    const holdWord = new SharedArrayBuffer(4);
    const hold = new Int32Array(holdWord);
    const watch = setInterval(() => {
      const want = this.busy() ? 1 : 0;
      if (Atomics.load(hold, 0) === want) return;
      Atomics.store(hold, 0, want);
      Atomics.notify(hold, 0);
    }, HOLD_POLL_MS);
    watch.unref();
    const ended = (): void => {
      clearInterval(watch);
      this.spawning = false;
    };
    VcpuThread.spawn(this.training !== undefined ? { ...this.training, hold: holdWord } : undefined).then(
      (t) => {
        ended();
        if (this.closed) void t.terminate();
        else this.spare = t;
      },
      () => ended(), // no spare: VMs start new threads as before
    );
  }

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
    this.closed = true;
    if (this.refill !== undefined) clearTimeout(this.refill);
    const all = this.idle.splice(0).map((t) => t.thread);
    if (this.spare !== undefined) all.push(this.spare);
    this.spare = undefined;
    await Promise.allSettled(all.map((t) => t.terminate()));
  }

  private prune(): void {
    for (let i = this.idle.length - 1; i >= 0; i--) if (!this.idle[i]!.thread.usable) this.idle.splice(i, 1);
  }
}
