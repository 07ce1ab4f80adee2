import { createHash, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { CONSOLE_HISTORY_BYTES } from '../machine/console-log.js';
import { PAGE_SIZE, TIMEBASE_HZ } from '../machine/memory/layout.js';
import type { BalloonHostPort } from '../machine/devices/virtio/balloon-host-port.js';
import type { GuestRam } from '../machine/memory/ram.js';
import { VcpuState } from '../machine/vcpu/control.js';
import type { Vcpu, VcpuError } from '../machine/vcpu/vcpu.js';
import type { GuestChannel, MigratableVm } from '../migration/vm-port.js';
import type { MachineConfig, TrafficSample } from '../migration/wire/messages.js';
import type { VmNetwork } from '../net/vm-network.js';
import { GuestStream } from '../net/guest-stream.js';
import { VsockEndpoint } from '../net/vsock-endpoint.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { ThreadPool } from './thread-pool.js';
import { encodeEnvelope } from './vm-envelope.js';
import type { VmBalloonInfo, VmInfo, VmStatus } from './api-types.js';

/** The machine config a hosted VM carries across hosts: the wire's fields plus RAM size and image name. */
export interface HostedVmConfig extends MachineConfig {
  memBytes: number;
  imageName: string;
}

export interface HostedVmEvents {
  console: [data: Uint8Array];
  exit: [code: number];
  crash: [error: VcpuError];
  /** The VM left this host: deleted, or handed over to another host by a migration. */
  gone: [departure: Departure];
}

/** Why a VM left this host; for a migration, where it went. */
export interface Departure {
  readonly why: 'deleted' | 'migrated' | 'shutdown';
  readonly migration?: string;
  /** The destination host's name and API address. */
  readonly destination?: string;
  readonly to?: string;
}

/** How long inspect waits for the vCPU thread to report its counters. */
const STATS_TIMEOUT_MS = 1000;

export function sha256Digest(bytes: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

export function newUuid(): Uint8Array {
  return Uint8Array.from(Buffer.from(randomUUID().replaceAll('-', ''), 'hex'));
}

export function formatUuid(u: Uint8Array): string {
  const h = Buffer.from(u).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * One VM held by this host: its identity, config and vCPU, and the status users see. It is the
 * MigratableVm the migration engine moves; pause/resume here are the engine's raw controls, the
 * user-facing ones (which track `paused`) are userPause/userResume.
 */
export class HostedVm extends EventEmitter<HostedVmEvents> implements MigratableVm {
  readonly uuid: Uint8Array;
  readonly name: string;
  readonly config: HostedVmConfig;
  readonly vcpu: Vcpu;
  readonly origin: 'boot' | 'migration';
  readonly since = new Date();
  /** The outgoing migration in progress, if any. */
  migrationId: string | undefined;
  /** Its gateway, exposed ports and vsock connections (undefined: no gateway configured). */
  network: VmNetwork | undefined;
  /** The host's logger (set when the host adopts the VM). */
  log: Logger = silentLogger;
  /** Without a network: the endpoint of this host's own guest connections (made on first use). */
  private ownEndpoint: VsockEndpoint | undefined;
  private userPaused = false;
  private crashError: VcpuError | undefined;
  private left: Departure | undefined;

  /** The guest image it booted from (config.imageDigest), when this host has it: sent to a destination for its warm-up. */
  readonly image: Uint8Array | undefined;

  constructor(opts: { uuid: Uint8Array; name: string; config: HostedVmConfig; vcpu: Vcpu; origin: 'boot' | 'migration'; image?: Uint8Array }) {
    super();
    this.image = opts.image;
    this.uuid = opts.uuid;
    this.name = opts.name;
    this.config = opts.config;
    this.vcpu = opts.vcpu;
    this.origin = opts.origin;
    this.vcpu.on('console', (d) => this.emit('console', d));
    this.vcpu.on('exit', (c) => this.emit('exit', c));
    this.vcpu.on('crash', (e) => {
      this.crashError = e;
      this.emit('crash', e);
    });
  }

  get ram(): GuestRam {
    return this.vcpu.ram;
  }

  get memBytes(): number {
    return this.vcpu.ram.bytes;
  }

  /** Its virtio-balloon device (every VM a host creates has one). */
  get balloon(): BalloonHostPort | undefined {
    return this.vcpu.balloon;
  }

  get status(): VmStatus {
    const s = this.vcpu.stateCode;
    if (this.crashError !== undefined || s === VcpuState.Crashed) return 'crashed';
    if (this.vcpu.exited !== undefined || s === VcpuState.Exited) return 'exited';
    if (this.migrationId !== undefined) return 'migrating';
    if (this.userPaused) return 'paused';
    return 'running';
  }

  // ---- MigratableVm (the engine's controls) ----

  trafficSamples(): readonly TrafficSample[] {
    return this.network?.endpoint.trafficSamples() ?? [];
  }

  async pause(): Promise<void> {
    await this.vcpu.pause();
    this.freezeRelay();
  }

  /** Stop relaying; what the guest sent and what it has not yet received go into the state. */
  private freezeRelay(): void {
    this.network?.freeze();
    this.ownEndpoint?.freeze();
  }

  resume(pausedSinceUs?: number): void {
    this.network?.thaw();
    this.ownEndpoint?.thaw();
    // A VM the user paused stays paused whatever the engine does.
    if (!this.userPaused) this.vcpu.resume(pausedSinceUs);
  }

  /** When the vCPU last stopped its clock (CLOCK_MONOTONIC µs): where a counted pause begins. */
  clockStoppedUs(): number {
    return this.vcpu.clockStoppedUs();
  }

  setThrottle(percent: number): void {
    this.vcpu.setThrottle(percent);
  }

  setDirtyLogging(on: boolean): Promise<void> {
    return this.vcpu.setDirtyLogging(on);
  }

  pauseAndSave(consoleFrom?: number): { paused: Promise<void>; state: Promise<Uint8Array> } {
    const p = this.vcpu.pauseAndSave(consoleFrom);
    const paused = p.paused.then(() => this.freezeRelay());
    // The network section once the relay is frozen, the machine state whenever it comes.
    const state = Promise.all([p.state, paused]).then(([machine]) => encodeEnvelope(machine, this.network?.saveState()));
    return { paused, state };
  }

  /** The host-level envelope: machine state + network section (src/host/vm-envelope.ts). */
  async saveState(): Promise<Uint8Array> {
    const machine = await this.vcpu.saveState();
    return encodeEnvelope(machine, this.network?.saveState());
  }

  /** A connection of this host's own to a guest vsock port (the migration-assist channel). */
  connectGuest(port: number): GuestChannel | undefined {
    let ep = this.network?.endpoint;
    if (ep === undefined) {
      const vsock = this.vcpu.vsock;
      if (vsock === undefined || this.left !== undefined) return undefined;
      ep = this.ownEndpoint ??= new VsockEndpoint(vsock, this.log, this.name);
    }
    return new GuestStream(ep, port);
  }

  // ---- what users do ----

  async userPause(): Promise<void> {
    await this.vcpu.pause();
    this.userPaused = true;
  }

  userResume(): void {
    this.userPaused = false;
    this.vcpu.resume();
  }

  consoleSince(from: number): { end: number; bytes: Uint8Array } {
    return this.vcpu.consoleSince(from);
  }

  /** The console history, at most what the machine itself keeps (and carries across migrations). */
  consoleHistory(): Uint8Array {
    const all = this.vcpu.consoleHistory();
    return all.length > CONSOLE_HISTORY_BYTES ? all.subarray(all.length - CONSOLE_HISTORY_BYTES) : all;
  }

  /**
   * Ends the VM's vCPU; the VM is gone from this host afterwards. With `threads`, its thread is
   * kept there for the next VM of the same image (ThreadPool); else it ends.
   */
  async stop(departure: Departure, threads?: ThreadPool): Promise<void> {
    if (this.left !== undefined) return;
    this.left = departure;
    // Deleted: the gateway stops exposing it; migrated: the destination announces it; shutdown: the link closes.
    if (departure.why === 'deleted') this.network?.withdraw();
    else this.network?.dispose();
    this.ownEndpoint?.dispose();
    try {
      if (threads === undefined) {
        await this.vcpu.stop();
      } else {
        const thread = await this.vcpu.retire();
        if (thread !== undefined) threads.put(this.config.imageDigest, thread);
      }
    } finally {
      this.emit('gone', departure);
    }
  }

  /** Set once the VM has left this host. */
  get departure(): Departure | undefined {
    return this.left;
  }

  /** The balloon as QEMU's query-balloon shows it: sizes are what the guest keeps. */
  async balloonInfo(): Promise<VmBalloonInfo | undefined> {
    const b = this.balloon;
    if (b === undefined || this.left !== undefined) return undefined;
    const d = b.driver();
    const ram = this.ram;
    return {
      targetBytes: ram.bytes - b.target() * PAGE_SIZE,
      actualBytes: ram.bytes - (await b.actual()) * PAGE_SIZE,
      balloonedBytes: ram.discarded.count() * PAGE_SIZE,
      driver: d.live,
      freePageHint: d.freePageHint,
    };
  }

  async info(hostName: string): Promise<VmInfo> {
    const info: VmInfo = {
      name: this.name,
      uuid: formatUuid(this.uuid),
      status: this.status,
      host: hostName,
      imageName: this.config.imageName,
      imageDigest: this.config.imageDigest,
      memBytes: this.memBytes,
      bootArgs: this.config.bootArgs,
      origin: this.origin,
      since: this.since.toISOString(),
      consoleBytes: this.consoleHistory().length,
    };
    if (this.vcpu.exited !== undefined) info.exitCode = this.vcpu.exited;
    if (this.crashError !== undefined) info.error = this.crashError.message;
    if (this.migrationId !== undefined) info.migration = this.migrationId;
    if (this.network !== undefined) info.network = this.network.describe();
    const balloon = await this.balloonInfo();
    if (balloon !== undefined) info.balloon = balloon;
    if (this.left === undefined && this.crashError === undefined) {
      let timer: NodeJS.Timeout | undefined;
      const stats = await Promise.race([
        this.vcpu.stats().catch(() => undefined),
        new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), STATS_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      if (stats !== undefined) {
        info.instructions = stats.instret;
        info.guestTimeMs = Math.floor(stats.mtime / (TIMEBASE_HZ / 1000));
      }
    }
    return info;
  }
}
