// The vCPU thread: owns one Machine and runs it in slices, obeying the shared control block.
import { parentPort, workerData } from 'node:worker_threads';
import { StopReason } from '../cpu/hart.js';
import { Machine } from '../machine.js';
import { MIN_RAM_BYTES, TIMEBASE_HZ } from '../memory/layout.js';
import { GuestRam } from '../memory/ram.js';
import { CLOCK_WRAP_US, Sig, wrappedAgeUs } from '../memory/signals.js';
import type { Logger } from '../../util/log.js';
import { monotonicUs } from '../../util/host-clock.js';
import { VcpuCommand, VcpuState } from './control.js';
import type { FromVcpu, ToVcpu, VcpuTraining, VcpuWorkerData } from './messages.js';
import type { VirtioDeviceSpec } from '../devices/virtio/device-spec.js';

// This thread hands buffers to the host by transfer (console output, saved states), and the first
// transfer in a thread detaches an ArrayBuffer for the first time, which invalidates V8's
// ArrayBufferDetaching protector: every optimized function that reads a typed array (the CPU
// loop, the bus, the dirty log) is thrown away and recompiled. That first transfer came after a
// VM's resume (its first console output, on a thread whose earlier machine had printed nothing):
// measured, the guest ran 15x slower for the first 100 ms after the switchover. So the protector
// goes now, before anything is compiled. (Every thread whose guest prints loses it anyway.)
{
  const b = new ArrayBuffer(8);
  structuredClone(b, { transfer: [b] });
}

/**
 * Instructions per slice: bounds pause latency and interrupt latency. A guest polling mtime runs
 * far fewer instructions per ms than a computing one (munch idle=poll: p50 0.11 ms, p90 0.35 ms
 * a slice of 10 000); a migration's pause waited 0.6-1.1 ms for the slice to end, 0.5-0.8 ms at
 * 4 000. bench:cpu: 153-164 MIPS at 4 000, 155-157 at 10 000 (within the machine's noise).
 * Since then a slice also ends after any slow-path instruction (an MMIO read of the timer) once
 * the command is no longer Run (Hart.setStopSignal): with another process holding a core, the
 * vCPU stopped 0.033 ms (p50) / 0.074 ms (p90) after the request instead of 0.086 / 0.134.
 */
const SLICE = 4_000;
/** Return to the event loop this often so host messages (input, save) get in. */
const YIELD_MS = 10;
/**
 * Flush console output to the host at least this often while the guest prints (checked at slice
 * ends): at most 1000 messages a second, and a line reaches a console client within about a
 * millisecond (at 5 ms, a line printed just after a migration's resume waited up to 5 ms more).
 */
const FLUSH_MS = 1;
/** Longest single sleep; the loop re-checks everything after it. */
const MAX_SLEEP_MS = 100;
/** After a load, how long the thread waits on the doorbell for the resume before it goes back to its messages. */
const RESUME_WAIT_MS = 50;
/** Throttling accounts run time in periods of this length. */
const THROTTLE_PERIOD_MS = 10;

const port = parentPort!;
// One machine at a time. A thread outlives its machine when the host retires it for reuse (a
// warm thread: its compiled code serves the next VM of the same image at full speed at once),
// so the machine and everything about it is set by init(), not at module level.
// null: a spare thread (VcpuThread.spawn), started with no machine.
let data = workerData as VcpuWorkerData;
let ram!: GuestRam;
let sig!: Int32Array;
let machine!: Machine;
let hart!: Machine['hart'];
/**
 * While retired: a machine of the same devices on 1 MiB of RAM of its own, never run, dropped
 * when the next machine is built. V8's optimized code (the CPU loop, the bus, the devices) refers
 * to the maps of the machine's objects, and those maps live only as long as some object has
 * them: a retired thread whose machine was collected lost them, threw that code away ("weak
 * objects"), and its next machine got new maps with no type feedback. Measured: a VM coming back
 * to a thread that had waited 6 s ran 15x slower for the first 80 ms after its resume. With this
 * stand-in alive, the next machine's objects take the same maps.
 */
let previous: Machine | undefined;
/** No machine: retired, waiting for 'init'. */
let retired = false;
/** The state code has run on this thread (a retired thread's next machine need not run it again). */
let stateCodeWarm = false;
// The logger (pino) loads on the first device log line: it would add ~40 ms to every thread start.
let log: Logger | undefined;

const out = new Uint8Array(64 * 1024);
let outLen = 0;
let lastFlush = performance.now();
let dirtyEpoch = 0;
let throttleRan = 0;
let exited = false;
/** True until a standby thread has loaded a machine state. */
let standby = (data as VcpuWorkerData | VcpuTraining | null) !== null && 'start' in data ? data.start.kind === 'standby' : false;

/** Builds the machine of `d` and starts it (boot, restore or standby); posts 'ready' or 'start-failed'. */
function init(d: VcpuWorkerData): void {
  data = d;
  outLen = 0;
  lastFlush = performance.now();
  dirtyEpoch = 0;
  throttleRan = 0;
  exited = false;
  retired = false;
  standby = d.start.kind === 'standby';
  try {
    ram = GuestRam.open(d.ram);
    sig = ram.signals;
    machine = new Machine(ram, undefined, { devices: d.devices ?? [], ...(d.vsockRings !== undefined ? { vsockRings: d.vsockRings } : {}) });
    previous = undefined;
    hart = machine.hart;
    // A pause ends the slice at the next slow-path instruction (a polling guest's MMIO read).
    hart.setStopSignal(sig, Sig.Command, VcpuCommand.Run);
    machine.onDeviceLog = (level, message, fields) => {
      const name = d.name ?? 'vm';
      void import('../../util/log.js').then(({ createLogger }) => {
        log ??= createLogger({ thread: 'vcpu' });
        log[level]({ vm: name, ...fields }, message);
      });
    };
    machine.onOutput = onOutput;
    hart.onAbsentPage = onAbsentPage;
    if (d.start.kind === 'boot') machine.boot(d.start.boot);
    else if (d.start.kind === 'restore') machine.restoreState(d.start.state);
    if (!stateCodeWarm) warmStateCode();
    const history = machine.console.contents();
    // Publish the state before 'ready' so the host never sees a started vCPU as 'starting'.
    if (!d.running) {
      Atomics.store(sig, Sig.Command, VcpuCommand.Pause);
      setState(VcpuState.Paused);
    }
    post({ type: 'ready', console: history, consoleTotal: machine.console.total });
    if (d.running) resume();
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    exited = true;
    if ((sig as Int32Array | undefined) !== undefined) setState(VcpuState.Crashed);
    post({ type: 'start-failed', name: err.name, message: err.message });
  }
}

/**
 * A spare thread's training (VcpuTraining): boots a guest on a throwaway machine and runs it for
 * up to `ms` (or until it exits), output discarded. V8 compiles the CPU loop for the instruction
 * paths it ran; a path a thread has never run has no type feedback, and the first time a VM
 * takes it the optimized loop is thrown away (measured after a switchover: a guest's first remu
 * on a thread whose warm-up boot had not reached one). A failure only means no training.
 */
function train(t: VcpuTraining['train']): void {
  try {
    const m = new Machine(GuestRam.allocate(t.ramBytes), undefined, { devices: t.devices });
    m.onOutput = () => {};
    // As a VM's machine (init): a stop signal, here one that never says stop, so the check of it
    // after each slow-path instruction has run too.
    m.hart.setStopSignal(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    m.boot(t.boot);
    m.clock.start();
    const hold = t.hold !== undefined ? new Int32Array(t.hold) : undefined;
    let end = performance.now() + t.ms;
    while (performance.now() < end) {
      if (m.runSlice(SLICE) === StopReason.Exit) break;
      if (hold !== undefined && Atomics.load(hold, 0) !== 0) {
        const held = performance.now();
        m.clock.stop();
        while (Atomics.load(hold, 0) !== 0) Atomics.wait(hold, 0, Atomics.load(hold, 0), 100);
        m.clock.start();
        end += performance.now() - held;
      }
      // Every store then takes the path that marks a fresh 512-byte block, as a VM's stores do
      // after a resume (its RAM's marks start clear): a byte store's first such mark otherwise
      // came after the resume and discarded the compiled loop (measured on a kv first visit).
      m.ram.written.clear();
    }
    previous = standIn(t.devices);
  } catch {
    /* only training */
  }
}

/** A machine of these devices on 1 MiB of RAM of its own, never run: see `previous`. */
function standIn(devices: readonly VirtioDeviceSpec[]): Machine {
  return new Machine(GuestRam.allocate(MIN_RAM_BYTES), undefined, { devices });
}

/** Drops the machine (the host has paused or stopped it) and waits for the next 'init'. */
function retire(): void {
  flush();
  // The machine is dropped next: load its own state into it a few times, so the next machine's
  // first load (a standby's, inside a migration's downtime) runs compiled code trained on a real
  // state rather than an empty one (2.2–3 ms cold against 0.3 ms).
  trainStateCode(true);
  exited = true;
  retired = true;
  // Let the RAM and the machine go (the host may free or reuse them), but first build a machine
  // of the same devices on a minimal RAM of its own, which keeps the maps alive (see previous).
  try {
    previous = standIn(data?.devices ?? []);
  } catch {
    previous = undefined; // only a speed-up
  }
  machine = undefined as unknown as Machine;
  hart = undefined as unknown as Machine['hart'];
  ram = undefined as unknown as GuestRam;
  sig = undefined as unknown as Int32Array;
  post({ type: 'retired' });
}

function post(m: FromVcpu, transfer?: ArrayBuffer[]): void {
  port.postMessage(m, transfer);
}

function flush(): void {
  if (outLen === 0) return;
  const chunk = out.slice(0, outLen);
  outLen = 0;
  lastFlush = performance.now();
  post({ type: 'console', data: chunk }, [chunk.buffer]);
}

function onOutput(byte: number): void {
  if (outLen === out.length) flush();
  out[outLen++] = byte;
}

function setState(s: VcpuState): void {
  Atomics.store(sig, Sig.State, s);
  Atomics.notify(sig, Sig.State);
}

/** Applies host requests that must take effect before the next instruction. */
function applyControls(): void {
  const req = Atomics.load(sig, Sig.DirtyRequest);
  if (req !== dirtyEpoch) {
    dirtyEpoch = req;
    hart.dirtyLogOn = (req & 1) === 1;
    // Dirty logging on: a migration starts, and its stop-and-copy will save this machine's state.
    if (hart.dirtyLogOn) trainStateCode(false);
    Atomics.store(sig, Sig.DirtyAck, req);
    Atomics.notify(sig, Sig.DirtyAck);
  }
  hart.presenceOn = Atomics.load(sig, Sig.PresenceOn) === 1;
}

/**
 * Blocks the thread until the doorbell rings or `ms` pass. `bell` is the doorbell value when the
 * caller last looked at the devices: a ring after that (say, a packet queued while the slice
 * ran, just before the guest entered wfi) returns at once instead of sleeping through it.
 */
function sleep(ms: number, bell: number = Atomics.load(sig, Sig.Doorbell)): void {
  if (Atomics.load(sig, Sig.Command) !== VcpuCommand.Run) return;
  Atomics.wait(sig, Sig.Doorbell, bell, Math.min(ms, MAX_SLEEP_MS));
}

// Post-copy: an access to an absent page publishes the page and sleeps until it is installed.
function onAbsentPage(page: number): void {
  const present = ram.presence.bits;
  Atomics.store(sig, Sig.FaultPage, page);
  Atomics.add(sig, Sig.FaultSeq, 1);
  Atomics.notify(sig, Sig.FaultSeq);
  let pausedHere = false;
  while (Atomics.load(present, page) === 0) {
    const bell = Atomics.load(sig, Sig.Doorbell);
    if (Atomics.load(present, page) !== 0) break;
    const cmd = Atomics.load(sig, Sig.Command);
    if (cmd !== VcpuCommand.Run && !pausedHere) {
      // The instruction has not started, so this is an instruction boundary: report paused.
      stopClock();
      flush();
      setState(VcpuState.PausedInFault);
      pausedHere = true;
    } else if (cmd === VcpuCommand.Run && pausedHere) {
      startClock();
      setState(VcpuState.Running);
      pausedHere = false;
    }
    Atomics.wait(sig, Sig.Doorbell, bell, 50);
  }
  Atomics.store(sig, Sig.FaultPage, -1);
  if (pausedHere) {
    // Paused while waiting: stay paused at this boundary until resumed.
    while (Atomics.load(sig, Sig.Command) !== VcpuCommand.Run) {
      const bell = Atomics.load(sig, Sig.Doorbell);
      Atomics.wait(sig, Sig.Doorbell, bell, 50);
    }
    startClock();
    setState(VcpuState.Running);
  }
}

/**
 * Starts the guest clock. When the host named the instant guest time counts from
 * (Sig.ClockResumeFrom), the clock first moves forward by the time since, read here, as it starts.
 */
function startClock(): void {
  const from = Atomics.exchange(sig, Sig.ClockResumeFrom, -1);
  if (from >= 0) machine.clock.advance(wrappedAgeUs(monotonicUs(), from) * (TIMEBASE_HZ / 1_000_000));
  machine.clock.start();
}

/** Stops the guest clock and notes when (Sig.ClockStoppedAt), for a migration that counts the pause. */
function stopClock(): void {
  machine.clock.stop();
  Atomics.store(sig, Sig.ClockStoppedAt, monotonicUs() % CLOCK_WRAP_US);
}

function enterPaused(): void {
  stopClock();
  flush();
  applyControls();
  setState(VcpuState.Paused);
}

function finish(code: number): void {
  exited = true;
  stopClock();
  flush();
  setState(VcpuState.Exited);
  post({ type: 'exit', code });
}

function crash(e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  exited = true;
  try {
    flush();
  } catch {
    /* nothing more to save */
  }
  setState(VcpuState.Crashed);
  post({ type: 'crash', message: err.message, stack: err.stack ?? '' });
}

/**
 * Runs the state code before it counts. A new thread compiles each function on its first call:
 * the first save or load of a machine state took 2–5 ms (for 2 KiB of state), and a migration
 * pays for them inside its downtime (the source saves after the pause, the destination's standby
 * thread loads before the resume). A standby machine holds nothing yet, so loading its own state
 * changes nothing; a running one only saves.
 */
function warmStateCode(): void {
  for (let i = 0; i < 3; i++) {
    const saved = machine.saveState();
    if (standby) machine.restoreState(saved);
  }
  // Loading is compiled only where a standby ran it; a thread that only saved warms again as a standby.
  stateCodeWarm = standby;
}

/**
 * Saves this machine's real state a few times (and, `load`, loads it back into the same machine:
 * only for a machine about to be dropped), so the state code is compiled for real contents
 * (console history, device queues) and not only for warmStateCode's empty machine. The results
 * are thrown away; a failure changes nothing that matters.
 */
function trainStateCode(load: boolean): void {
  try {
    for (let i = 0; i < 3; i++) {
      const saved = machine.saveState();
      if (load) machine.restoreState(saved);
    }
  } catch {
    /* only training */
  }
}

/** Runs slices until it is time to yield, pause or stop. */
function loop(): void {
  if (exited) return;
  try {
    const started = performance.now();
    let periodStart = started;
    for (;;) {
      const cmd = Atomics.load(sig, Sig.Command);
      if (cmd !== VcpuCommand.Run) {
        enterPaused();
        return;
      }
      applyControls();
      // Read before runSlice polls the devices: any ring from here on is work the slice may have missed.
      const bell = Atomics.load(sig, Sig.Doorbell);
      const reason = machine.runSlice(SLICE);
      if (reason === StopReason.Exit) {
        finish(machine.bus.exitCode);
        return;
      }
      const now = performance.now();
      if (outLen > 0 && now - lastFlush >= FLUSH_MS) flush();
      if (reason === StopReason.Wfi) {
        flush();
        sleep(machine.clock.msUntil(machine.clint.deadline()), bell);
        // Input or commands may have arrived: let the event loop deliver them.
        setImmediate(loop);
        return;
      }
      const pct = Atomics.load(sig, Sig.Throttle);
      if (pct > 0) {
        throttleRan += now - periodStart;
        periodStart = now;
        if (throttleRan >= THROTTLE_PERIOD_MS) {
          sleep((throttleRan * pct) / (100 - pct));
          throttleRan = 0;
          periodStart = performance.now();
        }
      }
      if (now - started >= YIELD_MS) {
        setImmediate(loop);
        return;
      }
    }
  } catch (e) {
    crash(e);
  }
}

/**
 * After a load the host resumes the VM within milliseconds (an incoming migration's commit):
 * wait for it on the doorbell, blocking, and start at once, rather than when the 'resume'
 * message gets through this thread's event loop (0.1-2.2 ms after the host's resume, measured,
 * inside the downtime). Bounded by RESUME_WAIT_MS; a resume later than that comes by message.
 */
function awaitResume(): void {
  const until = performance.now() + RESUME_WAIT_MS;
  for (;;) {
    if (Atomics.load(sig, Sig.Command) === VcpuCommand.Run) {
      resume();
      return;
    }
    const left = until - performance.now();
    if (left <= 0) return;
    const bell = Atomics.load(sig, Sig.Doorbell);
    if (Atomics.load(sig, Sig.Command) === VcpuCommand.Run) continue;
    Atomics.wait(sig, Sig.Doorbell, bell, left);
  }
}

function resume(): void {
  if (exited || standby) return;
  const s = Atomics.load(sig, Sig.State);
  if (s === VcpuState.Running) return;
  // The host set Run before posting 'resume'; a pause requested since then wins (else that pause
  // would return at once, seeing Paused, while this resume set the vCPU running again).
  if (Atomics.load(sig, Sig.Command) !== VcpuCommand.Run) return;
  startClock();
  setState(VcpuState.Running);
  loop();
}

port.on('message', (m: ToVcpu) => {
  if (m.type === 'init') {
    if (!retired) post({ type: 'start-failed', name: 'VcpuError', message: 'this vCPU thread still holds a machine' });
    else init(m.data);
    return;
  }
  if (retired) return;
  try {
    switch (m.type) {
      case 'retire':
        retire();
        break;
      case 'resume':
        resume();
        break;
      case 'input':
        machine.uart.pushInput(m.data);
        break;
      case 'vsock-event':
        // Delivered now if the guest posted an event buffer, else at a later slice.
        machine.vsock?.postEvent(m.id);
        break;
      case 'step': {
        if (Atomics.load(sig, Sig.State) !== VcpuState.Paused) {
          post({ type: 'failed', id: m.id, message: 'single-step needs a paused vCPU' });
          break;
        }
        const before = hart.instret;
        applyControls();
        // Guest time stands still while single-stepping, so stepped runs are exactly repeatable.
        // Count budget, not retired instructions: a guest in a trap loop retires none.
        let left = m.count;
        while (left > 0 && !exited) {
          const r = machine.runSlice(Math.min(left, SLICE));
          left -= hart.budgetUsed;
          if (r === StopReason.Exit) {
            finish(machine.bus.exitCode);
            break;
          }
          if (r === StopReason.Wfi) break;
        }
        flush();
        post({ type: 'stepped', id: m.id, executed: hart.instret - before });
        break;
      }
      case 'save': {
        let s = Atomics.load(sig, Sig.State);
        if (m.pausing === true && s === VcpuState.Running && Atomics.load(sig, Sig.Command) !== VcpuCommand.Run) {
          // Between slices (the loop yielded): an instruction boundary. Stop here, as loop() would.
          enterPaused();
          s = VcpuState.Paused;
        }
        if (s !== VcpuState.Paused && s !== VcpuState.Exited) {
          post({ type: 'failed', id: m.id, message: 'the machine state can only be saved while the vCPU is paused' });
          break;
        }
        const state = machine.saveState(m.consoleFrom);
        post({ type: 'saved', id: m.id, state }, [state.buffer as ArrayBuffer]);
        break;
      }
      case 'restore': {
        if (!standby) {
          post({ type: 'failed', id: m.id, message: 'only a standby vCPU can load a machine state' });
          break;
        }
        machine.restoreState(m.state);
        if (m.console !== undefined) machine.console.join(m.console.end, m.console.bytes);
        standby = false;
        const history = machine.console.contents();
        post({ type: 'restored', id: m.id, console: history, consoleTotal: machine.console.total }, [history.buffer as ArrayBuffer]);
        awaitResume();
        break;
      }
      case 'stats':
        post({ type: 'stats', id: m.id, stats: { instret: hart.instret, pc: hart.getPc(), mtime: machine.clock.ticks(), state: Atomics.load(sig, Sig.State) } });
        break;
    }
  } catch (e) {
    if ('id' in m) post({ type: 'failed', id: m.id, message: e instanceof Error ? e.message : String(e) });
    else crash(e);
  }
});

const spawned = data as VcpuWorkerData | VcpuTraining | null;
if (spawned === null || 'train' in spawned) {
  // A spare: no machine yet; the host sends 'init' when a VM needs this thread.
  if (spawned !== null) train(spawned.train);
  retired = true;
  post({ type: 'retired' });
} else {
  init(data);
}
