import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import { BalloonHost, type BalloonHostPort } from '../devices/virtio/balloon-host-port.js';
import type { VirtioDeviceSpec } from '../devices/virtio/device-spec.js';
import { VsockHost, type VsockHostPort } from '../devices/virtio/vsock-host-port.js';
import { allocateVsockRings, type VsockRings } from '../devices/virtio/vsock.js';
import { CONSOLE_HISTORY_BYTES, lastBytes } from '../console-log.js';
import { GuestRam } from '../memory/ram.js';
import { CLOCK_WRAP_US, Sig, ring, wrappedAgeUs } from '../memory/signals.js';
import { monotonicUs } from '../../util/host-clock.js';
import { VcpuCommand, VcpuState, vcpuStateName } from './control.js';
import type { FromVcpu, ToVcpu, VcpuStart, VcpuStats, VcpuTraining, VcpuWorkerData } from './messages.js';

/** The console mirror is folded into one chunk when it has this many (consoleHistory). */
const CONSOLE_FOLD_CHUNKS = 1024;

export class VcpuError extends Error {
  constructor(message: string, readonly vm?: string) {
    super(vm !== undefined ? `vm ${vm}: ${message}` : message);
    this.name = 'VcpuError';
  }
}

export interface VcpuOptions {
  readonly ram: GuestRam;
  readonly start: VcpuStart;
  /** Start running at once (default) or paused. */
  readonly running?: boolean;
  /** Name used in errors. */
  readonly name?: string;
  /** virtio devices (the VM's config; a restored state must have been saved with the same list). */
  readonly devices?: readonly VirtioDeviceSpec[];
  /** A retired thread to run this machine on (see Vcpu.retire); a new thread if absent or gone. */
  readonly thread?: VcpuThread;
}

/** How long pause() may block the host thread waiting for the vCPU to stop before it waits asynchronously. */
const PAUSE_SPIN_MS = 3;

/** How long a retiring vCPU thread may take to drop its machine before it is terminated instead. */
const RETIRE_TIMEOUT_MS = 2_000;

/**
 * A vCPU thread whose machine is gone, kept to run another (Vcpu.retire). Its compiled code is
 * what makes it worth keeping: a new thread runs the guest at a few percent of full speed for its
 * first 100–200 ms, while V8 compiles the CPU loop, and after a migration that is time the
 * guest's clients wait. A thread that ran the same image is fast from its first instruction.
 * Used at most once; terminate() it when it is not wanted.
 */
export class VcpuThread {
  private taken = false;
  private dead = false;

  /**
   * A new thread with no machine, its modules loaded (a new thread spends 100-200 ms loading
   * and compiling them before it can run anything): started ahead of need, it saves that time
   * for a VM that has no thread of its image here. `training`: a guest it runs first on a
   * throwaway machine (VcpuTraining). Rejects if the thread cannot start.
   */
  static spawn(training?: VcpuTraining['train']): Promise<VcpuThread> {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: training !== undefined ? ({ train: training } satisfies VcpuTraining) : null });
    return new Promise((resolve, reject) => {
      const done = (): void => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const onMessage = (m: FromVcpu): void => {
        if (m.type !== 'retired') return;
        done();
        resolve(new VcpuThread(worker));
      };
      const onError = (e: Error): void => {
        done();
        void worker.terminate();
        reject(new VcpuError(`a spare vCPU thread failed to start: ${e.message}`, 'spare'));
      };
      const onExit = (code: number): void => {
        done();
        reject(new VcpuError(`a spare vCPU thread exited (${code}) before it was ready`, 'spare'));
      };
      worker.on('message', onMessage);
      worker.once('error', onError);
      worker.once('exit', onExit);
    });
  }

  /** @internal use Vcpu.retire() or VcpuThread.spawn() */
  constructor(readonly worker: Worker) {
    worker.once('exit', () => (this.dead = true));
    // Idle, it keeps no process alive.
    worker.unref();
  }

  /** Still usable: not ended, not yet given to a Vcpu. */
  get usable(): boolean {
    return !this.dead && !this.taken;
  }

  /** The worker for a new Vcpu; undefined when it has ended or was taken before. */
  take(): Worker | undefined {
    if (!this.usable) return undefined;
    this.taken = true;
    this.worker.ref();
    return this.worker;
  }

  async terminate(): Promise<void> {
    this.taken = true;
    if (!this.dead) await this.worker.terminate();
  }
}

export interface VcpuEvents {
  console: [data: Uint8Array];
  exit: [code: number];
  crash: [error: VcpuError];
  fault: [page: number];
}

/**
 * The host thread's handle on a VM's vCPU thread: run, pause (returns once the vCPU is stopped
 * at an instruction boundary), resume, single-step, throttle, save state, stop. RAM is shared
 * with the thread, so the host reads and writes pages directly.
 */
export class Vcpu extends EventEmitter<VcpuEvents> {
  readonly ram: GuestRam;
  readonly name: string;
  /** The VM's virtio-vsock device, host side; undefined when the VM has none. */
  readonly vsock: VsockHostPort | undefined;
  /** The VM's virtio-balloon device, host side; undefined when the VM has none. */
  readonly balloon: BalloonHostPort | undefined;
  private readonly vsockHost: VsockHost | undefined;
  private readonly worker: Worker;
  /** Whether the machine runs on a thread that ran another before (Vcpu.retire). */
  readonly reusedThread: boolean;
  private readonly onWorkerMessage = (m: FromVcpu): void => this.onMessage(m);
  private readonly onWorkerExit = (): void => this.ended('vCPU thread ended');
  private readonly sig: Int32Array;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (m: FromVcpu) => void; reject: (e: Error) => void }>();
  private exitCode: number | undefined;
  private crashed: VcpuError | undefined;
  private terminated = false;
  private endedWhy = 'the vCPU thread has been stopped';
  private dirtyEpoch = 0;
  /** Console history as of start plus everything printed since (the host's mirror). */
  private consoleChunks: Uint8Array[] = [];
  /** Where the mirror ends in the guest's whole output (the machine's ConsoleLog.total, as far as this thread has heard). */
  private consoleEnd = 0;

  private constructor(opts: VcpuOptions, worker: Worker, rings: VsockRings | undefined, reused: boolean) {
    super();
    this.reusedThread = reused;
    this.ram = opts.ram;
    this.name = opts.name ?? 'vm';
    this.worker = worker;
    this.sig = opts.ram.signals;
    const devices = opts.devices ?? [];
    const vs = devices.find((d) => d.kind === 'virtio-vsock');
    this.vsockHost =
      vs !== undefined && rings !== undefined
        ? new VsockHost({ guestCid: vs.guestCid, rings, signals: this.sig, postEvent: (id) => this.postVsockEvent(id) })
        : undefined;
    this.vsock = this.vsockHost;
    const ram = opts.ram;
    this.balloon = devices.some((d) => d.kind === 'virtio-balloon')
      ? new BalloonHost({ signals: this.sig, pageCount: ram.pageCount, clearHints: () => ram.freeHints.clear() })
      : undefined;
  }

  private postVsockEvent(id: number): void {
    if (this.terminated) return;
    this.worker.postMessage({ type: 'vsock-event', id: id >>> 0 } satisfies ToVcpu);
    ring(this.sig);
  }

  /** Starts the vCPU thread and resolves once the machine is booted or restored. */
  static start(opts: VcpuOptions): Promise<Vcpu> {
    const running = opts.start.kind === 'standby' ? false : (opts.running ?? true);
    const sig = opts.ram.signals;
    Atomics.store(sig, Sig.Command, running ? VcpuCommand.Run : VcpuCommand.Pause);
    Atomics.store(sig, Sig.State, VcpuState.Starting);
    const devices = opts.devices ?? [];
    const rings = devices.some((d) => d.kind === 'virtio-vsock') ? allocateVsockRings() : undefined;
    const workerData: VcpuWorkerData = {
      ram: opts.ram.describe(),
      start: opts.start,
      running,
      devices,
      ...(rings !== undefined ? { vsockRings: rings } : {}),
      ...(opts.name !== undefined ? { name: opts.name } : {}),
    };
    const reused = opts.thread?.take();
    const worker = reused ?? new Worker(new URL('./worker.js', import.meta.url), { workerData });
    if (reused !== undefined) worker.postMessage({ type: 'init', data: workerData } satisfies ToVcpu);
    const vcpu = new Vcpu(opts, worker, rings, reused !== undefined);
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(new VcpuError(`vCPU thread failed to start: ${e.message}`, opts.name));
      const onFirst = (m: FromVcpu): void => {
        if (m.type === 'ready') {
          vcpu.consoleChunks.push(m.console);
          vcpu.consoleEnd = m.consoleTotal;
          worker.off('message', onFirst);
          worker.off('error', onError);
          worker.on('message', vcpu.onWorkerMessage);
          resolve(vcpu);
        } else if (m.type === 'start-failed' || m.type === 'crash') {
          worker.off('message', onFirst);
          worker.off('error', onError);
          void worker.terminate();
          const e = new VcpuError(m.message, opts.name);
          if (m.type === 'start-failed') e.name = m.name;
          reject(e);
        }
      };
      worker.on('message', onFirst);
      worker.once('error', onError);
      worker.on('exit', vcpu.onWorkerExit);
    });
  }

  /** The thread is gone (ended, or retired to run another machine): every request fails from now on. */
  private ended(why: string): void {
    if (!this.terminated) this.endedWhy = why;
    this.terminated = true;
    this.vsockHost?.close();
    for (const p of this.pending.values()) p.reject(new VcpuError(why, this.name));
    this.pending.clear();
  }

  private onMessage(m: FromVcpu): void {
    switch (m.type) {
      case 'console':
        this.consoleChunks.push(m.data);
        this.consoleEnd += m.data.length;
        // Folded now and then into one chunk of at most what the machine keeps: the mirror stays bounded.
        if (this.consoleChunks.length >= CONSOLE_FOLD_CHUNKS) this.consoleHistory();
        this.emit('console', m.data);
        break;
      case 'exit':
        this.exitCode = m.code;
        this.emit('exit', m.code);
        break;
      case 'crash':
        this.crashed = new VcpuError(`vCPU crashed: ${m.message}\n${m.stack}`, this.name);
        for (const p of this.pending.values()) p.reject(this.crashed);
        this.pending.clear();
        this.emit('crash', this.crashed);
        break;
      case 'stepped':
      case 'restored':
      case 'saved':
      case 'stats':
      case 'failed': {
        const p = this.pending.get(m.id);
        if (p === undefined) return;
        this.pending.delete(m.id);
        if (m.type === 'failed') p.reject(new VcpuError(m.message, this.name));
        else p.resolve(m);
        break;
      }
      default:
        break;
    }
  }

  private request(make: (id: number) => ToVcpu): Promise<FromVcpu> {
    if (this.terminated) return Promise.reject(new VcpuError(this.endedWhy, this.name));
    if (this.crashed !== undefined) return Promise.reject(this.crashed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(make(id));
    });
  }

  get state(): string {
    return vcpuStateName(Atomics.load(this.sig, Sig.State));
  }

  get stateCode(): VcpuState {
    return Atomics.load(this.sig, Sig.State) as VcpuState;
  }

  /** The guest's exit code once it powered off. */
  get exited(): number | undefined {
    return this.exitCode;
  }

  /** Asks the vCPU to stop at the next instruction boundary; resolves when it has. */
  async pause(): Promise<void> {
    Atomics.store(this.sig, Sig.Command, VcpuCommand.Pause);
    ring(this.sig);
    // The vCPU stops within a slice (~0.1 ms): wait for it on this thread first, blocking, since
    // an async wait's wake-up goes through the event loop (1–1.5 ms measured, inside a
    // migration's downtime); past PAUSE_SPIN_MS, wait without blocking.
    const spinUntil = performance.now() + PAUSE_SPIN_MS;
    for (;;) {
      const s = Atomics.load(this.sig, Sig.State);
      if (s !== VcpuState.Running && s !== VcpuState.Starting) {
        if (s === VcpuState.Crashed) throw this.crashed ?? new VcpuError('vCPU crashed', this.name);
        return;
      }
      if (performance.now() < spinUntil) {
        Atomics.wait(this.sig, Sig.State, s, 0.25);
        continue;
      }
      const w = Atomics.waitAsync(this.sig, Sig.State, s, 1000);
      if (w.async) await w.value;
    }
  }

  /**
   * Runs the vCPU again. `pausedSinceUs` (CLOCK_MONOTONIC µs, util/host-clock.ts): guest time
   * counts from that instant, so the clock first moves forward by the time since, as the vCPU
   * thread starts it (a migration counting its pause as guest time); by default the clock resumes
   * where it stopped.
   */
  resume(pausedSinceUs?: number): void {
    const s = Atomics.load(this.sig, Sig.State);
    if (s === VcpuState.Exited || s === VcpuState.Crashed) throw new VcpuError(`cannot resume a vCPU that is ${vcpuStateName(s)}`, this.name);
    Atomics.store(this.sig, Sig.ClockResumeFrom, resumeFrom(pausedSinceUs));
    Atomics.store(this.sig, Sig.Command, VcpuCommand.Run);
    ring(this.sig);
    this.worker.postMessage({ type: 'resume' } satisfies ToVcpu);
  }

  /** When the vCPU thread last stopped the guest clock (CLOCK_MONOTONIC µs; within the last 35 minutes). */
  clockStoppedUs(): number {
    const now = monotonicUs();
    return now - wrappedAgeUs(now, Atomics.load(this.sig, Sig.ClockStoppedAt));
  }

  /** Executes `count` instructions from the paused state (fewer if the guest waits or exits). */
  async step(count: number): Promise<number> {
    const m = await this.request((id) => ({ type: 'step', id, count }));
    return m.type === 'stepped' ? m.executed : 0;
  }

  /** Percentage (0..99) of wall time the vCPU sleeps: QEMU's cpu-throttle-percentage. */
  setThrottle(percent: number): void {
    const p = Math.max(0, Math.min(99, Math.round(percent)));
    Atomics.store(this.sig, Sig.Throttle, p);
    ring(this.sig);
  }

  get throttle(): number {
    return Atomics.load(this.sig, Sig.Throttle);
  }

  /**
   * pause() and saveState() in one: the save request is queued before the vCPU stops, so the
   * thread saves the state as soon as it has stopped, without a second message after the pause
   * (stop-and-copy waits for the state). The command is set before the request leaves (as
   * pause() sets it again), so a worker that reads the request between slices sees the pause
   * asked for and stops there.
   */
  pauseAndSave(consoleFrom?: number): { paused: Promise<void>; state: Promise<Uint8Array> } {
    Atomics.store(this.sig, Sig.Command, VcpuCommand.Pause);
    ring(this.sig);
    const state = this.request((id) => ({ type: 'save', id, pausing: true, ...(consoleFrom !== undefined ? { consoleFrom } : {}) })).then((m) => {
      if (m.type !== 'saved') throw new VcpuError('unexpected reply to save', this.name);
      return m.state;
    });
    return { paused: this.pause(), state };
  }

  /** The non-RAM machine state; the vCPU must be paused (or exited). */
  async saveState(): Promise<Uint8Array> {
    const m = await this.request((id) => ({ type: 'save', id }));
    if (m.type !== 'saved') throw new VcpuError('unexpected reply to save', this.name);
    return m.state;
  }

  /**
   * Loads a machine state into a vCPU started with `{ kind: 'standby' }` (it stays paused).
   * Throws a VcpuError if the state is refused; the thread may then hold a half-loaded machine and
   * must be stopped.
   */
  async restore(state: Uint8Array, console?: { readonly end: number; readonly bytes: Uint8Array }): Promise<void> {
    const m = await this.request((id) => ({ type: 'restore', id, state, ...(console !== undefined ? { console } : {}) }));
    if (m.type !== 'restored') throw new VcpuError('unexpected reply to restore', this.name);
    this.consoleChunks = [m.console];
    this.consoleEnd = m.consoleTotal;
  }

  async stats(): Promise<VcpuStats> {
    const m = await this.request((id) => ({ type: 'stats', id }));
    if (m.type !== 'stats') throw new VcpuError('unexpected reply to stats', this.name);
    return m.stats;
  }

  /** Turns the dirty log on or off; resolves once every later guest store is (or is not) logged. */
  async setDirtyLogging(on: boolean): Promise<void> {
    this.dirtyEpoch += 1;
    if (((this.dirtyEpoch & 1) === 1) !== on) this.dirtyEpoch += 1;
    const epoch = this.dirtyEpoch;
    if (on) this.ram.dirty.clear();
    Atomics.store(this.sig, Sig.DirtyRequest, epoch);
    ring(this.sig);
    // A paused vCPU applies the request before its next instruction; a running one acks it.
    for (;;) {
      const ack = Atomics.load(this.sig, Sig.DirtyAck);
      const s = Atomics.load(this.sig, Sig.State);
      if (ack === epoch || s !== VcpuState.Running) return;
      const w = Atomics.waitAsync(this.sig, Sig.DirtyAck, ack, 100);
      if (w.async) await w.value;
    }
  }

  /** Sends bytes to the guest's UART. */
  input(data: Uint8Array): void {
    this.worker.postMessage({ type: 'input', data } satisfies ToVcpu);
    ring(this.sig);
  }

  /** The console history: what the machine had when this thread started plus all output since. */
  consoleHistory(): Uint8Array {
    const total = this.consoleChunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const c of this.consoleChunks) {
      out.set(c, o);
      o += c.length;
    }
    if (this.consoleChunks.length > 64) this.consoleChunks = [out.length > CONSOLE_HISTORY_BYTES ? out.slice(out.length - CONSOLE_HISTORY_BYTES) : out];
    return out;
  }

  /**
   * The console history this thread has heard of from position `from` of the guest's whole output
   * on (from the oldest it holds, if `from` is older), and the position where it ends.
   */
  consoleSince(from: number): { end: number; bytes: Uint8Array } {
    const want = Math.min(CONSOLE_HISTORY_BYTES, Math.max(0, this.consoleEnd - from));
    return { end: this.consoleEnd, bytes: lastBytes(this.consoleChunks, want) };
  }

  /** Waits for the next absent-page access the vCPU reports (post-copy network fault). */
  async nextFault(lastSeq: number, timeoutMs: number): Promise<{ seq: number; page: number } | undefined> {
    const w = Atomics.waitAsync(this.sig, Sig.FaultSeq, lastSeq, timeoutMs);
    if (w.async) await w.value;
    const seq = Atomics.load(this.sig, Sig.FaultSeq);
    if (seq === lastSeq) return undefined;
    return { seq, page: Atomics.load(this.sig, Sig.FaultPage) };
  }

  /**
   * Stops the machine but keeps its thread for another (VcpuOptions.thread), or ends it and
   * resolves undefined when it cannot (crashed, exited, stuck in a post-copy fault wait).
   * The RAM stays valid for the host; the thread no longer touches it.
   */
  async retire(): Promise<VcpuThread | undefined> {
    if (this.terminated) return undefined;
    if (this.crashed !== undefined || this.exitCode !== undefined) {
      await this.stop();
      return undefined;
    }
    this.vsockHost?.close();
    Atomics.store(this.sig, Sig.Command, VcpuCommand.Pause);
    ring(this.sig);
    const worker = this.worker;
    const done = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        worker.off('message', onRetired);
        resolve(false);
      }, RETIRE_TIMEOUT_MS);
      const onRetired = (m: FromVcpu): void => {
        if (m.type !== 'retired') return;
        clearTimeout(t);
        worker.off('message', onRetired);
        resolve(true);
      };
      worker.on('message', onRetired);
      worker.postMessage({ type: 'retire' } satisfies ToVcpu);
    });
    if (!done || this.terminated) {
      await this.stop();
      return undefined;
    }
    worker.off('message', this.onWorkerMessage);
    worker.off('exit', this.onWorkerExit);
    this.ended('the vCPU thread was retired');
    return new VcpuThread(worker);
  }

  /** Ends the vCPU thread. The RAM stays valid for the host. */
  async stop(): Promise<void> {
    if (this.terminated) return;
    this.vsockHost?.close();
    Atomics.store(this.sig, Sig.Command, VcpuCommand.Stop);
    ring(this.sig);
    await this.worker.terminate();
    this.ended('the vCPU thread has been stopped');
  }
}

/** The longest pause a resume counts: just under one wrap of the slot (about 35 minutes). */
const MAX_COUNTED_PAUSE_US = CLOCK_WRAP_US - 1_000_000;

/** Sig.ClockResumeFrom for `pausedSinceUs`: -1 for none; an instant in the future counts as now, one too long ago as the longest pause. */
function resumeFrom(pausedSinceUs: number | undefined): number {
  if (pausedSinceUs === undefined || !Number.isFinite(pausedSinceUs)) return -1;
  const now = monotonicUs();
  const since = Math.min(now, Math.max(Math.round(pausedSinceUs), now - MAX_COUNTED_PAUSE_US));
  return since % CLOCK_WRAP_US;
}
