import type { GuestRam } from '../machine/memory/ram.js';
import { Vcpu, type VcpuThread } from '../machine/vcpu/vcpu.js';
import { DeviceConfigError, parseDeviceSpecs, type VirtioDeviceSpec } from '../machine/devices/virtio/device-spec.js';
import { RefusedError, type DestinationHost, type IncomingVm, type LoadOptions, type PreparedVm, type Reservation } from '../migration/vm-port.js';
import type { JsonValue } from '../migration/wire/messages.js';
import { HOST_DEVICE_KINDS, type Host, type MemoryClaim } from './host.js';
import { decodeEnvelope } from './vm-envelope.js';
import { arrivedNetwork, attachNetwork, preconnect } from './vm-net-setup.js';
import { HostedVm, formatUuid, type HostedVmConfig } from './hosted-vm.js';
import { STUN_CONFIG_KEY, resumeStunnedTasks } from '../migration/stun.js';
import { warmUpThread } from './warm-up.js';
import { Prefault } from './prefault.js';
import { PAGE_SIZE } from '../machine/memory/layout.js';
import type { PageRuns } from '../migration/wire/page-runs.js';
import { monotonicUs } from '../util/host-clock.js';
import type { TrafficSample } from '../migration/wire/messages.js';

/** This host's reservation for one incoming VM: the RAM, and the claim on the memory budget. */
interface HostReservation extends Reservation {
  readonly claim: MemoryClaim;
  /** A vCPU thread started at reservation, so loading the state at switchover costs no thread start-up. */
  standby: Promise<Vcpu>;
  readonly devices: VirtioDeviceSpec[];
  /** The standby thread already ran this image here (kept in the ThreadPool): no warm-up needed. */
  readonly warm: boolean;
  /** The RAM is a new buffer, not a pooled one: the kernel backs its pages on first write. */
  readonly fresh: boolean;
  /** Writing the pages the source listed (WRITTEN) into fresh RAM; stopped at load or release. */
  prefault?: Prefault;
  /** Ends a warm-up in progress (set while one runs). */
  endWarmUp?: () => void;
  /** The guest image, once the source sent it: kept with the VM for its next move. */
  image?: Uint8Array;
  /** The client traffic samples, once the source sent them (WARM_TRAFFIC): replayed by the warm-up, kept with the VM. */
  samples: readonly TrafficSample[];
  /** Settles the warm-up's `traffic` with the samples. */
  samplesArrived: (samples: readonly TrafficSample[]) => void;
  readonly traffic: Promise<readonly TrafficSample[]>;
}

/** Names a VM may carry (also the API's rule, so every VM is addressable as /v1/vms/{name}). */
export const VM_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * The destination side of the seam for this host: reservation checks the name, uuid, memory
 * budget and config; load restores the state into a paused vCPU; activation adds the VM to the
 * host. Until activation the VM is nowhere in the host's list, only a claim on its memory.
 */
export class IncomingVms implements DestinationHost {
  private readonly held = new Set<HostReservation>();
  /** When each incoming VM (by uuid) was reserved, for the migration's record. */
  private readonly reservedAt = new Map<string, Date>();

  constructor(private readonly host: Host) {}

  get count(): number {
    return this.held.size;
  }

  reserve(vm: IncomingVm): Reservation {
    const uuid = formatUuid(vm.uuid);
    if (this.host.shuttingDown) throw new RefusedError('busy', `host ${this.host.name} is shutting down`);
    if (!VM_NAME_PATTERN.test(vm.name)) throw new RefusedError('bad-request', `VM name '${vm.name}' is not allowed on host ${this.host.name} (letters, digits, '.', '_', '-'; at most 63)`);
    const devices = this.devicesFor(vm);
    const problem = this.host.admissionProblem(vm.name, uuid, vm.ramBytes);
    if (problem !== undefined) throw new RefusedError(problem.kind === 'exists' ? 'exists' : 'too-big', problem.message);
    let ram: GuestRam;
    let fresh: boolean;
    try {
      ({ ram, fresh } = this.host.allocateRam(vm.ramBytes));
    } catch (e) {
      throw new RefusedError('too-big', `host ${this.host.name} cannot allocate ${vm.ramBytes} bytes of guest RAM: ${(e as Error).message}`);
    }
    preconnect(this.host, vm.config['gateway']);
    const claim: MemoryClaim = { name: vm.name, uuid, bytes: vm.ramBytes };
    // A thread that ran this image before (the VM was here) runs it at full speed from the resume.
    const kept = this.host.threads.take(vm.config.imageDigest);
    // Else the spare: loaded already, so the guest-image warm-up can start at once (warm-up.ts).
    const thread = kept ?? this.host.threads.takeSpare();
    const standby = Vcpu.start({ ram, name: vm.name, devices, start: { kind: 'standby' }, ...(thread !== undefined ? { thread } : {}) });
    standby.catch(() => {}); // a failure surfaces in load()
    let samplesArrived!: (samples: readonly TrafficSample[]) => void;
    const traffic = new Promise<readonly TrafficSample[]>((resolve) => (samplesArrived = resolve));
    const r: HostReservation = {
      samples: [],
      samplesArrived,
      traffic,
      ram,
      claim,
      standby,
      devices,
      warm: kept !== undefined,
      fresh,
      zeroed: true,
      // The standby as it is now: once a warm-up has begun, the one rebuilt after it (the source
      // pauses only after a PONG, which waits for this; measured on a first visit without it:
      // 24.5 ms of the downtime waiting for the rebuilt standby).
      get ready(): Promise<void> {
        return r.standby.then(() => undefined);
      },
    };
    this.host.claim(claim);
    this.held.add(r);
    this.reservedAt.set(uuid, new Date());
    this.host.log.info({ vm: vm.name, uuid, ramBytes: vm.ramBytes }, 'incoming migration: RAM reserved');
    return r;
  }

  /**
   * The source sent the guest image: unless the standby thread already ran it, the image boots
   * on that thread as a throwaway machine until the state arrives or warmUpMs pass, so the VM
   * resumes on compiled code (warm-up.ts). Then the thread becomes the standby again.
   */
  warmUp(vm: IncomingVm, reservation: Reservation, image: Uint8Array): void {
    if (!this.held.has(reservation as HostReservation)) return;
    const r = reservation as HostReservation;
    r.image = image;
    const ms = this.host.warmUpMs;
    if (r.warm || ms <= 0 || r.endWarmUp !== undefined) return;
    let ended = false;
    let end!: () => void;
    const until = new Promise<void>((resolve) => (end = resolve));
    r.endWarmUp = (): void => {
      ended = true;
      end();
    };
    const log = this.host.log.child({ vm: vm.name });
    const guest = { name: vm.name, image, imageName: hostedConfig(vm).imageName, bootArgs: vm.config.bootArgs, ramBytes: vm.ramBytes, devices: r.devices, traffic: r.traffic, log };
    r.standby = r.standby.then(async (standby) => {
      // Ended before it could start (a new standby thread still loading its code when round 1
      // was in): booting, dropping and rebuilding would only delay the load. Measured without a
      // spare thread: 107 and 158 ms of downtime on first visits.
      if (ended) {
        log.info('incoming migration: guest image warm-up skipped (round 1 arrived before the standby thread was ready)');
        return standby;
      }
      const thread = await standby.retire();
      let warmed: VcpuThread | undefined;
      try {
        const w = await warmUpThread(thread, guest, ms, until);
        warmed = w.thread;
        this.host.warmUps++;
        if (w.traffic !== undefined) {
          this.host.warmUpTraffic.connections += w.traffic.connections;
          this.host.warmUpTraffic.answers += w.traffic.answers;
        }
        log.info({ ranMs: Math.round(w.ranMs), cut: w.cut, threadKept: warmed !== undefined, ...(w.traffic !== undefined ? { trafficConnections: w.traffic.connections, trafficAnswers: w.traffic.answers } : {}) }, 'incoming migration: guest image warm-up done');
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'incoming migration: the guest image warm-up failed; the VM resumes on a cold thread');
      }
      return Vcpu.start({ ram: r.ram, name: vm.name, devices: r.devices, start: { kind: 'standby' }, ...(warmed !== undefined ? { thread: warmed } : {}) });
    });
    r.standby.catch(() => {}); // a failure surfaces in load()
  }

  /**
   * The source sent samples of the VM's client traffic: the warm-up replays them to its boot (if
   * it has not ended), and the VM keeps them for its next move.
   */
  warmTraffic(_vm: IncomingVm, reservation: Reservation, samples: readonly TrafficSample[]): void {
    if (!this.held.has(reservation as HostReservation)) return;
    const r = reservation as HostReservation;
    r.samples = samples.map((s) => ({ vmPort: s.vmPort, bytes: new Uint8Array(s.bytes) })); // copies: the frame's buffer is reused
    r.samplesArrived(r.samples);
  }

  /**
   * Round 1 is in: end the warm-up now rather than when the state arrives. Retiring the throwaway
   * machine and building the standby again took 5.7-15 ms, all of it inside the downtime when the
   * state came first (a short first-visit migration: the warm-up's 300 ms ran into the switchover).
   */
  bulkArrived(_vm: IncomingVm, reservation: Reservation): void {
    (reservation as HostReservation).endWarmUp?.();
  }

  /**
   * The pages that may hold data (WRITTEN): into fresh RAM, written now (prefault.ts), while the
   * warm-up runs and round 1 has not begun. Pooled RAM is backed already.
   */
  prefault(vm: IncomingVm, reservation: Reservation, written: PageRuns): void {
    if (!this.held.has(reservation as HostReservation)) return;
    const r = reservation as HostReservation;
    if (!r.fresh || r.prefault !== undefined || written.pageCount === 0) return;
    const log = this.host.log.child({ vm: vm.name });
    r.prefault = new Prefault(r.ram, written, (p) => {
      this.host.prefaultedBytes += p.pages * PAGE_SIZE;
      log.info({ pages: p.pages, listed: p.listed, complete: p.complete, ms: Math.round(p.ms) }, 'incoming migration: fresh RAM backed ahead of its pages');
    });
  }

  /** load() joins the console history sent live to the state's (console-precopy). */
  readonly joinsConsole = true;

  async load(vm: IncomingVm, reservation: Reservation, state: Uint8Array, opts: LoadOptions): Promise<PreparedVm> {
    const r = this.own(reservation);
    r.endWarmUp?.();
    r.prefault?.stop(); // before the VM can run: its stores would race with the prefault's
    const vcpu = await r.standby;
    // The host-level envelope: machine state + the VM's network section (vm-envelope.ts).
    let net: ReturnType<typeof arrivedNetwork> | undefined;
    try {
      const parts = decodeEnvelope(state);
      if (parts.network !== undefined) net = arrivedNetwork(parts.network);
      await vcpu.restore(parts.machine, opts.console);
    } catch (e) {
      await vcpu.stop();
      throw e;
    }
    // Made now, not at resume: its first construction on a host costs 0.25-0.5 ms (measured), and
    // resume() runs inside the downtime. Nothing of it is live until the host adopts it.
    const hosted = new HostedVm({ uuid: vm.uuid, name: vm.name, config: hostedConfig(vm), vcpu, origin: 'migration', ...(r.image !== undefined ? { image: r.image } : {}) });
    let done = false;
    return {
      resume: (pausedSinceUs?: number): void => {
        if (done) return;
        done = true;
        this.drop(r);
        this.host.adopt(hosted);
        // Before the guest runs: the packets it had not yet received go back into its ring; then
        // the new location is announced to the gateway (the role of Xen's unsolicited ARP).
        if (net !== undefined) {
          try {
            attachNetwork(this.host, hosted, net.config, net.endpoint).endpoint.adoptSamples(r.samples);
          } catch (e) {
            this.host.log.error({ vm: vm.name, err: (e as Error).message }, 'incoming migration: the VM network could not be restored; its connections are lost');
          }
        }
        vcpu.resume(pausedSinceUs);
        this.host.log.info({ vm: vm.name, ...(pausedSinceUs !== undefined ? { pausedForUs: monotonicUs() - pausedSinceUs } : {}) }, 'incoming migration: VM activated');
        // The source may have stunned guest tasks (docs/assist.md): they resume here.
        if (vm.config[STUN_CONFIG_KEY] === true) void resumeStunnedTasks(hosted, this.host.log);
      },
      // Post-copy: the destination counts the pages the guest writes while pages still arrive.
      ...(opts.postcopy ? { setDirtyLogging: (on: boolean): Promise<void> => vcpu.setDirtyLogging(on) } : {}),
      discard: async (): Promise<void> => {
        if (done) return;
        done = true;
        this.drop(r);
        await vcpu.stop();
        this.host.ramPool.put(r.ram);
      },
    };
  }

  /** When the incoming VM was reserved here (once; the record is then dropped). */
  takeReservedAt(vm: IncomingVm | undefined): Date | undefined {
    if (vm === undefined) return undefined;
    const key = formatUuid(vm.uuid);
    const at = this.reservedAt.get(key);
    this.reservedAt.delete(key);
    return at;
  }

  release(_vm: IncomingVm, reservation: Reservation): void {
    // Idempotent: a discarded load has already given the memory back.
    const r = reservation as HostReservation;
    r.endWarmUp?.();
    r.prefault?.stop();
    if (this.held.has(r)) {
      void r.standby
        .then((v) => v.stop(), () => {})
        .then(() => this.host.ramPool.put(r.ram));
    }
    this.drop(r);
  }

  /** The VM's devices, if this host provides every one of them; else a config-mismatch refusal. */
  private devicesFor(vm: IncomingVm): VirtioDeviceSpec[] {
    const cannot = (why: string): never => {
      throw new RefusedError('config-mismatch', `host ${this.host.name} cannot provide the VM's devices: ${why} (this host provides ${HOST_DEVICE_KINDS.join(', ')})`);
    };
    let devices: VirtioDeviceSpec[] = [];
    try {
      devices = parseDeviceSpecs(vm.config.devices);
    } catch (e) {
      if (e instanceof DeviceConfigError) cannot(e.message);
      throw e;
    }
    const missing = devices.filter((d) => !HOST_DEVICE_KINDS.includes(d.kind));
    if (missing.length > 0) cannot(missing.map((d) => d.kind).join(', '));
    return devices;
  }

  private own(reservation: Reservation): HostReservation {
    if (!this.held.has(reservation as HostReservation)) throw new RefusedError('internal', 'unknown reservation');
    return reservation as HostReservation;
  }

  private drop(r: HostReservation): void {
    if (this.held.delete(r)) this.host.unclaim(r.claim);
  }
}

/** The config a VM arrives with; memBytes and imageName come along as extra keys (older peers may lack them). */
function hostedConfig(vm: IncomingVm): HostedVmConfig {
  const { [STUN_CONFIG_KEY]: _stun, ...c } = vm.config;
  const imageName: JsonValue | undefined = c['imageName'];
  return { ...c, memBytes: vm.ramBytes, imageName: typeof imageName === 'string' ? imageName : '(unknown)' };
}
