import type { GuestRam } from '../machine/memory/ram.js';
import { Vcpu } from '../machine/vcpu/vcpu.js';
import { DeviceConfigError, parseDeviceSpecs, type VirtioDeviceSpec } from '../machine/devices/virtio/device-spec.js';
import { RefusedError, type DestinationHost, type IncomingVm, type PreparedVm, type Reservation } from '../migration/vm-port.js';
import type { JsonValue } from '../migration/wire/messages.js';
import { HOST_DEVICE_KINDS, type Host, type MemoryClaim } from './host.js';
import { decodeEnvelope } from './vm-envelope.js';
import { arrivedNetwork, attachNetwork, preconnect } from './vm-net-setup.js';
import { HostedVm, formatUuid, type HostedVmConfig } from './hosted-vm.js';
import { STUN_CONFIG_KEY, resumeStunnedTasks } from '../migration/stun.js';

/** This host's reservation for one incoming VM: the RAM, and the claim on the memory budget. */
interface HostReservation extends Reservation {
  readonly claim: MemoryClaim;
  /** A vCPU thread started at reservation, so loading the state at switchover costs no thread start-up. */
  readonly standby: Promise<Vcpu>;
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
    try {
      ram = this.host.allocateRam(vm.ramBytes);
    } catch (e) {
      throw new RefusedError('too-big', `host ${this.host.name} cannot allocate ${vm.ramBytes} bytes of guest RAM: ${(e as Error).message}`);
    }
    preconnect(this.host, vm.config['gateway']);
    const claim: MemoryClaim = { name: vm.name, uuid, bytes: vm.ramBytes };
    // A thread that ran this image before (the VM was here) runs it at full speed from the resume.
    const thread = this.host.threads.take(vm.config.imageDigest);
    const standby = Vcpu.start({ ram, name: vm.name, devices, start: { kind: 'standby' }, ...(thread !== undefined ? { thread } : {}) });
    standby.catch(() => {}); // a failure surfaces in load()
    const r: HostReservation = { ram, claim, standby, zeroed: true, ready: standby.then(() => undefined) };
    this.host.claim(claim);
    this.held.add(r);
    this.reservedAt.set(uuid, new Date());
    this.host.log.info({ vm: vm.name, uuid, ramBytes: vm.ramBytes }, 'incoming migration: RAM reserved');
    return r;
  }

  async load(vm: IncomingVm, reservation: Reservation, state: Uint8Array, opts: { readonly postcopy: boolean }): Promise<PreparedVm> {
    const r = this.own(reservation);
    const vcpu = await r.standby;
    // The host-level envelope: machine state + the VM's network section (vm-envelope.ts).
    let net: ReturnType<typeof arrivedNetwork> | undefined;
    try {
      const parts = decodeEnvelope(state);
      if (parts.network !== undefined) net = arrivedNetwork(parts.network);
      await vcpu.restore(parts.machine);
    } catch (e) {
      await vcpu.stop();
      throw e;
    }
    const config = hostedConfig(vm);
    let done = false;
    return {
      resume: (): void => {
        if (done) return;
        done = true;
        this.drop(r);
        const hosted = new HostedVm({ uuid: vm.uuid, name: vm.name, config, vcpu, origin: 'migration' });
        this.host.adopt(hosted);
        // Before the guest runs: the packets it had not yet received go back into its ring; then
        // the new location is announced to the gateway (the role of Xen's unsolicited ARP).
        if (net !== undefined) {
          try {
            attachNetwork(this.host, hosted, net.config, net.endpoint);
          } catch (e) {
            this.host.log.error({ vm: vm.name, err: (e as Error).message }, 'incoming migration: the VM network could not be restored; its connections are lost');
          }
        }
        vcpu.resume();
        this.host.log.info({ vm: vm.name }, 'incoming migration: VM activated');
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
        this.host.ramPool.put(r.ram.buffer);
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
    if (this.held.has(r)) {
      void r.standby
        .then((v) => v.stop(), () => {})
        .then(() => this.host.ramPool.put(r.ram.buffer));
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
