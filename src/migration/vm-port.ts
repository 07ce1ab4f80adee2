/**
 * The seam between migration and the rest of tern. Migration sees a VM only through these
 * interfaces: its RAM (pages, dirty log, presence map), pause/resume/throttle, dirty logging,
 * and its non-RAM state as an opaque blob. The host layer implements them.
 */
import type { BalloonHostPort } from '../machine/devices/virtio/balloon-host-port.js';
import type { GuestRam } from '../machine/memory/ram.js';
import type { MachineConfig, TrafficSample } from './wire/messages.js';
import type { PageRuns } from './wire/page-runs.js';

/** Who a VM is: stays the same across every move. */
export interface VmIdentity {
  /** 16-byte UUID. */
  readonly uuid: Uint8Array;
  readonly name: string;
}

/** A running VM as the source of a migration sees it. */
export interface MigratableVm extends VmIdentity {
  readonly ram: GuestRam;
  /** What the destination must reproduce (image digest, boot args, devices). */
  readonly config: MachineConfig;
  /** Stops the vCPU at an instruction boundary; resolves once it has (guest time stops too). */
  pause(): Promise<void>;
  /**
   * Runs the vCPU again (a failed migration gives the VM back). `pausedSinceUs`: this host's
   * CLOCK_MONOTONIC (µs, util/host-clock.ts) when the pause began; the guest clock then counts the
   * pause (guest clock 'continuous'). Omitted, guest time resumes where it stopped.
   */
  resume(pausedSinceUs?: number): void;
  /** When the vCPU last stopped its clock (CLOCK_MONOTONIC µs), if the VM knows: where a counted pause begins. */
  clockStoppedUs?(): number;
  /** Percent of wall time the vCPU sleeps, 0..99 (auto-converge). */
  setThrottle(percent: number): void;
  /** Resolves once every later guest store is (or is not) marked in ram.dirty. */
  setDirtyLogging(on: boolean): Promise<void>;
  /** The machine state (CPU, devices, clock, console); only while paused. */
  saveState(): Promise<Uint8Array>;
  /**
   * pause() and saveState() at once, if the VM can do better than one after the other (the
   * state is saved as soon as the vCPU stops). `state` rejects if the pause did not happen.
   */
  pauseAndSave?(consoleFrom?: number): { paused: Promise<void>; state: Promise<Uint8Array> };
  /**
   * The console history from position `from` of the guest's whole output on (what the host
   * holds of it, at most 1 MiB), and the position where it ends: sent live (CONSOLE frames), so
   * that pauseAndSave(consoleFrom) leaves what was sent out of the state saved in the downtime.
   */
  consoleSince?(from: number): { end: number; bytes: Uint8Array };
  /** Its virtio-balloon device, if it has one: free page hinting at migration start. */
  readonly balloon?: BalloonHostPort;
  /** A stream to a guest vsock port (the migration-assist channel); undefined without a vsock device. */
  connectGuest?(port: number): GuestChannel | undefined;
  /** The guest image it booted from (config.imageDigest is its digest), if this host has it: sent for the destination's warm-up. */
  readonly image?: Uint8Array;
  /** Per vsock port clients connect to, the first bytes a client sent (WARM_TRAFFIC): replayed by the destination's warm-up. */
  trafficSamples?(): readonly TrafficSample[];
}

/** A byte stream the host opened to a guest port; see docs/assist.md. */
export interface GuestChannel {
  /** Resolves once the guest accepted; rejects if it refused or the connection broke. */
  readonly opened: Promise<void>;
  send(bytes: Uint8Array): void;
  /** The next bytes from the guest; undefined at the end of its stream; rejects if it broke. */
  read(): Promise<Uint8Array | undefined>;
  /** Sends no more; resolves once the connection is gone on both sides. */
  close(): Promise<void>;
  /** Resets the connection now. */
  destroy(): void;
}

/** How DestinationHost.load loads a state. */
export interface LoadOptions {
  /** Post-copy: pages not yet received are absent and fetched on demand once it runs. */
  readonly postcopy: boolean;
  /**
   * Console history received live (CONSOLE frames; bytes [end − length, end) of the guest's
   * output), to put in front of the shorter history the state carries (ConsoleLog.join).
   */
  readonly console?: { readonly end: number; readonly bytes: Uint8Array };
}

/** What a destination host offers an incoming migration. */
export interface IncomingVm extends VmIdentity {
  readonly ramBytes: number;
  readonly config: MachineConfig;
}

/** RAM reserved at the destination for one incoming migration. */
export interface Reservation {
  /** All zero where no page arrives: the source never sends ballooned pages nor (round 1) free-hinted ones. */
  readonly ram: GuestRam;
  /** Resolves once the host can load a state at once (e.g. its standby vCPU thread is ready; read at each PING, so it may change, as after a warm-up). */
  readonly ready?: Promise<void>;
  /** Every byte of `ram` is zero (fresh or cleared): round 1 need not write zero pages. */
  readonly zeroed?: boolean;
}

export class RefusedError extends Error {
  constructor(readonly reason: 'busy' | 'exists' | 'too-big' | 'config-mismatch' | 'bad-request' | 'internal', message: string) {
    super(message);
    this.name = 'RefusedError';
  }
}

/** A VM loaded at the destination from the received state, not yet running. */
export interface PreparedVm {
  /**
   * Stage 5, activation: the vCPU runs here from now on. `pausedSinceUs`: when the source paused
   * the VM, on this host's CLOCK_MONOTONIC (µs); the guest clock first moves forward by the time
   * since (guest clock 'continuous', PAUSED_AT). Omitted, guest time resumes where it stopped.
   */
  resume(pausedSinceUs?: number): void;
  /** Before commitment only: drop it (the source keeps running the VM). */
  discard(): Promise<void>;
  /**
   * Post-copy: turns the VM's dirty log on (before resume) and off, so the destination can
   * count the pages the guest writes while pages are still arriving (its writable working set).
   */
  setDirtyLogging?(on: boolean): Promise<void>;
}

/** The destination host's side of the seam. */
export interface DestinationHost {
  /** Stage 1, reservation: check resources and config, allocate, or throw RefusedError. */
  reserve(vm: IncomingVm): Reservation;
  /**
   * Stage 4, commitment check: load the received state over the reserved RAM into a paused VM.
   * Throws if the state is refused. `postcopy`: pages not yet received are absent in the
   * presence map and fetched on demand once it runs.
   */
  load(vm: IncomingVm, reservation: Reservation, state: Uint8Array, opts: LoadOptions): Promise<PreparedVm>;
  /** Whether load() joins `opts.console` to the state's console history: only then is console-precopy granted. */
  readonly joinsConsole?: boolean;
  /** The migration failed before a VM was loaded: drop the reserved RAM. */
  release(vm: IncomingVm, reservation: Reservation): void;
  /**
   * Optional, pre-copy and hybrid: the guest image the VM booted from arrived (its digest is the
   * config's imageDigest). The host may run it on the reservation's standby vCPU thread until
   * load(), so the VM resumes on compiled code. Never fails the migration.
   */
  warmUp?(vm: IncomingVm, reservation: Reservation, image: Uint8Array): void;
  /**
   * Optional, after warmUp: samples of the VM's client traffic (WARM_TRAFFIC), for the warm-up
   * to replay to its boot and for the VM to keep. The samples are views: copy to keep. Never
   * fails the migration.
   */
  warmTraffic?(vm: IncomingVm, reservation: Reservation, samples: readonly TrafficSample[]): void;
  /**
   * Optional: the first round (every page) has arrived. Later rounds are short, so the state may
   * come at any moment: a warm-up still running should end now, so that dropping it is not inside
   * the downtime. Never fails the migration.
   */
  bulkArrived?(vm: IncomingVm, reservation: Reservation): void;
  /**
   * Optional, pre-copy and hybrid (protocol 1.8, written-pages): the pages the source's guest has
   * written, sent before round 1. A host whose reserved RAM is fresh may write those pages now
   * (values unchanged), so the kernel backs them before the pages arrive; it must stop before
   * load() returns, since the VM may then run. Never fails the migration.
   */
  prefault?(vm: IncomingVm, reservation: Reservation, written: PageRuns): void;
}
