// In-test hosts for migration tests: a MigratableVm over a real Vcpu, and a DestinationHost that
// reserves GuestRam, restores the state into a paused Vcpu and resumes it on activation.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { Vcpu } from '../../src/machine/vcpu/vcpu.js';
import { MigrationServer, type MigrationServerOptions } from '../../src/migration/destination.js';
import type { MigrationReport } from '../../src/migration/report.js';
import { OutgoingMigration, type MigrateOptions } from '../../src/migration/source.js';
import { RefusedError, type DestinationHost, type IncomingVm, type LoadOptions, type MigratableVm, type PreparedVm, type Reservation } from '../../src/migration/vm-port.js';
import { FrameReader, type Frame, type MachineConfig, type PageRuns, type TrafficSample } from '../../src/migration/wire/index.js';
import { imageBytes, text } from './images.js';

export const MiB = 1024 * 1024;

const vcpus = new Set<Vcpu>();

/** Stops every vCPU these helpers started (test teardown). */
export async function stopAllVcpus(): Promise<void> {
  const all = [...vcpus];
  vcpus.clear();
  await Promise.all(all.map((v) => v.stop().catch(() => undefined)));
}

function track(v: Vcpu): Vcpu {
  vcpus.add(v);
  return v;
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

export function count(s: string, ch: string): number {
  let n = 0;
  for (let i = s.indexOf(ch); i >= 0; i = s.indexOf(ch, i + 1)) n++;
  return n;
}

/** A VM as the source host holds it: a Vcpu plus identity and config. Counts the engine's calls. */
export class TestVm implements MigratableVm {
  pauses = 0;
  resumes = 0;
  dirtyLogging = false;
  /** Called (synchronously) when the engine pauses the VM. */
  onPause: (() => void) | undefined;

  constructor(
    readonly vcpu: Vcpu,
    readonly uuid: Uint8Array,
    readonly name: string,
    readonly config: MachineConfig,
  ) {}

  get ram(): GuestRam {
    return this.vcpu.ram;
  }
  pause(): Promise<void> {
    this.pauses++;
    this.onPause?.();
    return this.vcpu.pause();
  }
  resume(pausedSinceUs?: number): void {
    this.resumes++;
    this.vcpu.resume(pausedSinceUs);
  }
  clockStoppedUs(): number {
    return this.vcpu.clockStoppedUs();
  }
  setThrottle(percent: number): void {
    this.vcpu.setThrottle(percent);
  }
  setDirtyLogging(on: boolean): Promise<void> {
    this.dirtyLogging = on;
    return this.vcpu.setDirtyLogging(on);
  }
  saveState(): Promise<Uint8Array> {
    return this.vcpu.saveState();
  }
  console(): string {
    return text(this.vcpu.consoleHistory());
  }
  count(ch: string): number {
    return count(this.console(), ch);
  }
  async stop(): Promise<void> {
    vcpus.delete(this.vcpu);
    await this.vcpu.stop();
  }
}

/** Boots a guest image in a running vCPU. */
export async function bootTestVm(app: string, bootargs: string, ramBytes: number, name: string = app): Promise<TestVm> {
  const image = imageBytes(app);
  const ram = GuestRam.allocate(ramBytes);
  const vcpu = track(await Vcpu.start({ ram, name, start: { kind: 'boot', boot: { image, imageName: app + '.elf', bootargs } } }));
  const config: MachineConfig = { imageDigest: 'sha256:' + createHash('sha256').update(image).digest('hex'), bootArgs: bootargs, devices: [], imageName: app };
  return new TestVm(vcpu, new Uint8Array(randomBytes(16)), name, config);
}

/**
 * A destination host: reserve allocates GuestRam, load restores into a paused Vcpu, resume runs
 * it and files it under `vms`. Counts what is held so tests can check nothing leaks.
 */
export class TestDestinationHost implements DestinationHost {
  /** Activated VMs, by name. */
  readonly vms = new Map<string, TestVm>();
  /** Reservations not yet released, discarded or activated. */
  private readonly held = new Set<Reservation>();
  reserves = 0;
  releases = 0;
  discards = 0;
  loads = 0;
  /** Why loads failed (other than loadError). */
  readonly loadFailures: string[] = [];
  /** A second drop of the same reservation (a bug in the engine). */
  doubleDrops = 0;
  /** Refuse every reservation with this. */
  refuseWith: RefusedError | undefined;
  /** When set, load waits for it (to hold a session in commitment). */
  loadGate: Promise<void> | undefined;
  /** Load fails with this. */
  loadError: Error | undefined;
  /** Called when a reservation is asked for (before it is made). */
  onReserve: ((vm: IncomingVm) => void) | undefined;
  /** Each reservation's `ready` (the host cannot load a state until it settles). */
  readyGate: Promise<void> | undefined;
  /** bulkArrived calls (round 1 in), and how many of them came before that reservation's load. */
  bulkArrivals = 0;
  bulkArrivalsBeforeLoad = 0;
  private readonly loaded = new Set<Reservation>();

  get reservations(): number {
    return this.held.size;
  }

  reserve(vm: IncomingVm): Reservation {
    this.reserves++;
    this.onReserve?.(vm);
    if (this.refuseWith !== undefined) throw this.refuseWith;
    for (const v of this.vms.values()) {
      if (hex(v.uuid) === hex(vm.uuid)) throw new RefusedError('exists', `VM ${vm.name} already runs on this host`);
    }
    let ram: GuestRam;
    try {
      ram = GuestRam.allocate(vm.ramBytes);
    } catch (e) {
      throw new RefusedError('too-big', (e as Error).message);
    }
    const r: Reservation = this.readyGate !== undefined ? { ram, ready: this.readyGate } : { ram };
    this.held.add(r);
    return r;
  }

  bulkArrived(_vm: IncomingVm, reservation: Reservation): void {
    this.bulkArrivals++;
    if (!this.loaded.has(reservation)) this.bulkArrivalsBeforeLoad++;
  }

  async load(vm: IncomingVm, reservation: Reservation, state: Uint8Array): Promise<PreparedVm> {
    this.loads++;
    this.loaded.add(reservation);
    if (!this.held.has(reservation)) throw new Error('load of a reservation this host does not hold');
    if (this.loadGate !== undefined) await this.loadGate;
    if (this.loadError !== undefined) throw this.loadError;
    let vcpu: Vcpu;
    try {
      vcpu = track(await Vcpu.start({ ram: reservation.ram, name: vm.name, running: false, start: { kind: 'restore', state } }));
    } catch (e) {
      this.loadFailures.push((e as Error).message);
      throw e;
    }
    let done = false;
    return {
      resume: (pausedSinceUs?: number): void => {
        if (done) throw new Error('resume after resume/discard');
        done = true;
        this.drop(reservation);
        this.vms.set(vm.name, new TestVm(vcpu, vm.uuid, vm.name, vm.config));
        vcpu.resume(pausedSinceUs);
      },
      discard: async (): Promise<void> => {
        if (done) throw new Error('discard after resume/discard');
        done = true;
        this.discards++;
        this.drop(reservation);
        vcpus.delete(vcpu);
        await vcpu.stop();
      },
    };
  }

  release(_vm: IncomingVm, reservation: Reservation): void {
    this.releases++;
    this.drop(reservation);
  }

  /** The VM left this host (migrated away): forget it and stop its vCPU. */
  async remove(name: string): Promise<void> {
    const v = this.vms.get(name);
    this.vms.delete(name);
    await v?.stop();
  }

  private drop(r: Reservation): void {
    if (!this.held.delete(r)) this.doubleDrops++;
  }
}

/** A DestinationHost that never runs anything: for fuzzing the server. */
export class NullDestinationHost implements DestinationHost {
  private readonly held = new Set<Reservation>();
  activations = 0;
  doubleDrops = 0;
  /** What each activation's resume() was given: when the pause began (PAUSED_AT), if known. */
  readonly resumedPausedSince: (number | undefined)[] = [];

  get reservations(): number {
    return this.held.size;
  }

  reserve(vm: IncomingVm): Reservation {
    if (vm.ramBytes > 64 * MiB) throw new RefusedError('too-big', `${vm.ramBytes} bytes is more than this host takes`);
    const r: Reservation = { ram: GuestRam.allocate(vm.ramBytes) };
    this.held.add(r);
    return r;
  }

  /** console-precopy is granted: load() is given the history sent live, recorded here. */
  readonly joinsConsole = true;
  /** The console history each load() was given (copied), or undefined where none came. */
  readonly consoles: ({ end: number; bytes: Uint8Array } | undefined)[] = [];

  async load(_vm: IncomingVm, reservation: Reservation, state: Uint8Array, opts?: LoadOptions): Promise<PreparedVm> {
    if (state.length < 4) throw new Error('state too short');
    this.consoles.push(opts?.console !== undefined ? { end: opts.console.end, bytes: new Uint8Array(opts.console.bytes) } : undefined);
    await Promise.resolve();
    let done = false;
    return {
      resume: (pausedSinceUs?: number): void => {
        if (done) throw new Error('twice');
        done = true;
        this.activations++;
        this.resumedPausedSince.push(pausedSinceUs);
        this.drop(reservation);
      },
      discard: async (): Promise<void> => {
        if (done) throw new Error('twice');
        done = true;
        this.drop(reservation);
      },
    };
  }

  release(_vm: IncomingVm, reservation: Reservation): void {
    this.drop(reservation);
  }

  /** Images received for a warm-up (IMAGE frames), in order. */
  readonly warmImages: Uint8Array[] = [];

  warmUp(_vm: IncomingVm, reservation: Reservation, image: Uint8Array): void {
    if (!this.held.has(reservation)) throw new Error('warm-up of a reservation this host does not hold');
    this.warmImages.push(image);
  }

  /** Traffic samples received for a warm-up (WARM_TRAFFIC frames), copied, in order. */
  readonly warmTraffics: TrafficSample[][] = [];

  warmTraffic(_vm: IncomingVm, reservation: Reservation, samples: readonly TrafficSample[]): void {
    if (!this.held.has(reservation)) throw new Error('warm traffic for a reservation this host does not hold');
    this.warmTraffics.push(samples.map((s) => ({ vmPort: s.vmPort, bytes: new Uint8Array(s.bytes) })));
  }

  /** The written-page sets received (WRITTEN frames), in order. */
  readonly writtens: PageRuns[] = [];

  prefault(_vm: IncomingVm, reservation: Reservation, written: PageRuns): void {
    if (!this.held.has(reservation)) throw new Error('WRITTEN for a reservation this host does not hold');
    this.writtens.push({ ramPages: written.ramPages, pageCount: written.pageCount, runs: written.runs.slice() });
  }

  private drop(r: Reservation): void {
    if (!this.held.delete(r)) this.doubleDrops++;
  }
}

/** A listening server on 127.0.0.1, port 0. */
export async function startServer(host: DestinationHost, opts: Partial<MigrationServerOptions> = {}): Promise<{ server: MigrationServer; port: number }> {
  const server = new MigrationServer(host, { name: opts.name ?? 'dest', ...opts });
  const { port } = await server.listen(0, '127.0.0.1');
  return { server, port };
}

let seq = 0;

export function migrateOptions(port: number, over: Partial<MigrateOptions> = {}): MigrateOptions {
  return {
    id: `m-${++seq}`,
    sourceName: 'src',
    destinationName: 'dst',
    destination: { host: '127.0.0.1', port },
    mode: 'precopy',
    maxBandwidthBps: 0,
    minBandwidthBps: 0,
    downtimeLimitMs: 300,
    maxRounds: 30,
    verifyRam: true,
    timeoutMs: 60_000,
    ...over,
  };
}

export function migrate(vm: MigratableVm, port: number, over: Partial<MigrateOptions> = {}): { migration: OutgoingMigration; report: Promise<MigrationReport> } {
  const migration = new OutgoingMigration(vm, migrateOptions(port, over));
  return { migration, report: migration.run() };
}

/**
 * Sends `bytes` to a migration listener, half-closes, and returns the frames it answered until it
 * closed. With `pauseAfter`, the first that many bytes go first and the rest 20 ms later (so a
 * frame's head and its data arrive in different reads).
 */
export async function exchangeFrames(port: number, bytes: Uint8Array, pauseAfter = 0): Promise<Frame[]> {
  const sock = connect(port, '127.0.0.1');
  const answers: Buffer[] = [];
  sock.on('data', (c: Buffer) => answers.push(c));
  sock.on('error', () => {});
  const closed = once(sock, 'close');
  await once(sock, 'connect');
  const first = Math.min(bytes.length, pauseAfter);
  if (first > 0) {
    sock.write(bytes.subarray(0, first));
    await new Promise((r) => setTimeout(r, 20));
  }
  sock.end(bytes.subarray(first));
  await closed;
  return [...new FrameReader().feed(Buffer.concat(answers))];
}
