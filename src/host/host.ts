import { PAGE_SIZE } from '../machine/memory/layout.js';
import { GuestRam, RamSizeError } from '../machine/memory/ram.js';
import { Vcpu } from '../machine/vcpu/vcpu.js';
import type { VirtioDeviceKind, VirtioDeviceSpec } from '../machine/devices/virtio/device-spec.js';
import { VSOCK_DEFAULT_GUEST_CID } from '../machine/devices/virtio/vsock-packet.js';
import type { DeviceSpec } from '../migration/wire/messages.js';
import type { Logger } from '../util/log.js';
import type { HostInfo, VmInfo } from './api-types.js';
import { ApiFailure } from './errors.js';
import { EventHub } from './events.js';
import { HostedVm, formatUuid, newUuid, sha256Digest, type HostedVmConfig } from './hosted-vm.js';
import { RamPool } from './ram-pool.js';
import { ThreadPool } from './thread-pool.js';
import { TERN_VERSION, API_VERSION } from './version.js';
import { attachNetwork, type NewVmNetwork } from './vm-net-setup.js';
import { hugePagesStatus } from '../util/huge-pages.js';

export interface HostOptions {
  readonly name: string;
  /** Budget for the RAM of all VMs held or reserved here. */
  readonly maxMemBytes: number;
  /** RAM of departed VMs kept warm for the next VM of the same size (0: none). Default 512 MiB. */
  readonly ramPoolBytes?: number;
  /**
   * Guest RAM sizes to preallocate into the pool at start, one buffer each (its pages written in
   * the background, so the kernel backs them before a VM of that size arrives). Their sum must fit
   * ramPoolBytes. Default none.
   */
  readonly preallocRam?: readonly number[];
  /** vCPU threads of departed VMs kept for the next VM of the same image (0: none). Default 2. */
  readonly warmThreads?: number;
  /**
   * How long an incoming VM's guest image runs on its standby vCPU thread during pre-copy (when
   * the source sends the image and no thread that ran it is kept here), 0: never. Default 300 ms.
   */
  readonly warmUpMs?: number;
  readonly log: Logger;
}

export const DEFAULT_RAM_POOL_BYTES = 512 * 1024 * 1024;
export const DEFAULT_WARM_THREADS = 2;
export const DEFAULT_WARM_UP_MS = 300;

/** The devices every VM created here gets (vsock first: slot 7; balloon: slot 6). */
export function newVmDevices(): VirtioDeviceSpec[] {
  return [{ kind: 'virtio-vsock', guestCid: VSOCK_DEFAULT_GUEST_CID }, { kind: 'virtio-balloon' }];
}

/** The device kinds this host can give a VM (an incoming VM with any other kind is refused). */
export const HOST_DEVICE_KINDS: readonly VirtioDeviceKind[] = ['virtio-vsock', 'virtio-balloon'];

/** A machine device as MachineConfig carries it (JSON). */
export function deviceConfig(d: VirtioDeviceSpec): DeviceSpec {
  return d.kind === 'virtio-vsock' ? { kind: d.kind, guestCid: d.guestCid } : { kind: d.kind };
}

/** What POST /v1/vms asks for, validated. */
export interface NewVm {
  readonly name: string;
  readonly image: Uint8Array;
  readonly imageName: string;
  readonly memBytes: number;
  readonly bootArgs: string;
  /** Its gateway and exposed ports (docs/networking.md). */
  readonly network?: NewVmNetwork;
}

/** RAM set aside for something not yet a VM here (an incoming migration). */
export interface MemoryClaim {
  readonly name: string;
  readonly uuid: string;
  readonly bytes: number;
}

/**
 * The VMs of one host and the memory they use. Every VM on this host is in `vms` under its
 * name; names (and uuids) are unique per host, including those of VMs still arriving.
 */
export class Host {
  readonly name: string;
  readonly maxMemBytes: number;
  readonly events = new EventHub();
  readonly log: Logger;
  readonly startedAt = new Date();
  /** Whether guest RAM asks for transparent huge pages (fixed at the process's start). */
  readonly hugePages = hugePagesStatus();
  /** Warm RAM of VMs that left, reused by incoming migrations and new VMs. */
  readonly ramPool: RamPool;
  /** vCPU threads of VMs that left, by image, for the next VM of that image (its code is compiled). */
  readonly threads: ThreadPool;
  /** See HostOptions.warmUpMs. */
  readonly warmUpMs: number;
  /** Guest-image warm-ups run for incoming migrations (IncomingVms.warmUp). */
  warmUps = 0;
  /** Bytes of incoming VMs' fresh RAM written ahead of their pages (prefault.ts) since start. */
  prefaultedBytes = 0;
  /** Their replays of client traffic: connections accepted, answers read. */
  readonly warmUpTraffic = { connections: 0, answers: 0 };
  private readonly vms = new Map<string, HostedVm>();
  /** Callers waiting for a VM of that name to arrive here (whenHere). */
  private readonly arrivals = new Map<string, Set<(vm: HostedVm) => void>>();
  /** VMs running here whose pages still arrive by post-copy: their RAM may still be written. */
  private readonly filling = new Set<string>();
  /** Names being created by POST /v1/vms (the image is booting). */
  private readonly starting = new Map<string, number>();
  private readonly claims = new Set<MemoryClaim>();
  private closing = false;

  constructor(opts: HostOptions) {
    this.name = opts.name;
    this.maxMemBytes = opts.maxMemBytes;
    this.ramPool = new RamPool(opts.ramPoolBytes ?? DEFAULT_RAM_POOL_BYTES);
    this.log = opts.log;
    this.preallocate(opts.preallocRam ?? []);
    this.threads = new ThreadPool(opts.warmThreads ?? DEFAULT_WARM_THREADS);
    this.warmUpMs = opts.warmUpMs ?? DEFAULT_WARM_UP_MS;
  }

  /** Puts one new buffer per size into the RAM pool, backed in the background; logs when it is done. */
  private preallocate(sizes: readonly number[]): void {
    if (sizes.length === 0) return;
    const bytes = sizes.reduce((a, b) => a + b, 0);
    for (const size of sizes) {
      if (!GuestRam.isValidSize(size)) throw new RamSizeError(size);
      if (!this.ramPool.prealloc(size)) throw new RangeError(`cannot preallocate ${bytes} bytes of guest RAM: the RAM pool holds at most ${this.ramPool.capBytes} bytes`);
    }
    const started = performance.now();
    this.log.info({ bytes, buffers: sizes.length }, 'preallocating guest RAM');
    void this.ramPool.idle().then(() => this.log.info({ bytes, ms: Math.round(performance.now() - started) }, 'guest RAM preallocated'));
  }

  get shuttingDown(): boolean {
    return this.closing;
  }

  list(): HostedVm[] {
    return [...this.vms.values()];
  }

  /** The VM named so, or a 404. */
  get(name: string): HostedVm {
    const vm = this.vms.get(name);
    if (vm === undefined) throw ApiFailure.notFound(`no VM named '${name}' on host ${this.name}`);
    return vm;
  }

  find(name: string): HostedVm | undefined {
    return this.vms.get(name);
  }

  usedBytes(): number {
    let n = 0;
    for (const vm of this.vms.values()) n += vm.memBytes;
    for (const b of this.starting.values()) n += b;
    return n;
  }

  reservedBytes(): number {
    let n = 0;
    for (const c of this.claims) n += c.bytes;
    return n;
  }

  freeBytes(): number {
    return Math.max(0, this.maxMemBytes - this.usedBytes() - this.reservedBytes());
  }

  /** Why a VM of this name/uuid/size cannot come here, or undefined if it can. */
  admissionProblem(name: string, uuid: string | undefined, bytes: number): { kind: 'exists' | 'no-memory'; message: string } | undefined {
    if (this.vms.has(name) || this.starting.has(name)) return { kind: 'exists', message: `host ${this.name} already has a VM named '${name}'` };
    for (const c of this.claims) {
      if (c.name === name) return { kind: 'exists', message: `a VM named '${name}' is already arriving on host ${this.name}` };
      if (uuid !== undefined && c.uuid === uuid) return { kind: 'exists', message: `VM ${uuid} is already arriving on host ${this.name}` };
    }
    if (uuid !== undefined) {
      for (const vm of this.vms.values()) {
        if (formatUuid(vm.uuid) === uuid) return { kind: 'exists', message: `host ${this.name} already runs VM ${uuid} (as '${vm.name}')` };
      }
    }
    if (bytes > this.freeBytes()) {
      return { kind: 'no-memory', message: `host ${this.name} has ${this.freeBytes()} bytes of its ${this.maxMemBytes}-byte guest memory budget free; the VM needs ${bytes}` };
    }
    return undefined;
  }

  /**
   * Guest RAM of `bytes`, all zero: warm from the pool when it holds a buffer that size. Writes
   * are tracked (GuestRam.written): only the guest, its devices, the loader and incoming
   * migrations write a daemon's RAM, and each of them marks what it writes. `fresh`: a new
   * buffer, not a pooled one, so the kernel backs each page only at its first write.
   */
  allocateRam(bytes: number): { ram: GuestRam; fresh: boolean } {
    const pooled = this.ramPool.take(bytes);
    return { ram: GuestRam.allocate(bytes, pooled, true), fresh: pooled === undefined };
  }

  claim(c: MemoryClaim): void {
    this.claims.add(c);
  }

  unclaim(c: MemoryClaim): void {
    this.claims.delete(c);
  }

  /** Boots a new VM from an image (POST /v1/vms). */
  async create(spec: NewVm): Promise<HostedVm> {
    if (this.closing) throw new ApiFailure(503, 'shutting-down', `host ${this.name} is shutting down`);
    const problem = this.admissionProblem(spec.name, undefined, spec.memBytes);
    if (problem !== undefined) throw ApiFailure.conflict(problem.message, problem.kind);
    this.starting.set(spec.name, spec.memBytes);
    try {
      let ram: GuestRam;
      try {
        ram = this.allocateRam(spec.memBytes).ram;
      } catch (e) {
        if (e instanceof RamSizeError) throw ApiFailure.badRequest(`memBytes: ${e.message}`);
        throw new ApiFailure(507, 'no-memory', `cannot allocate ${spec.memBytes} bytes of guest RAM: ${(e as Error).message}`);
      }
      let vcpu: Vcpu;
      const devices = newVmDevices();
      const imageDigest = sha256Digest(spec.image);
      const thread = this.threads.take(imageDigest) ?? this.threads.takeSpare();
      try {
        vcpu = await Vcpu.start({
          ...(thread !== undefined ? { thread } : {}),
          ram,
          name: spec.name,
          running: true,
          devices,
          start: { kind: 'boot', boot: { image: spec.image, imageName: spec.imageName, bootargs: spec.bootArgs } },
        });
      } catch (e) {
        const err = e as Error;
        if (err.name === 'ImageError') throw new ApiFailure(400, 'bad-image', err.message);
        if (/does not fit|give the VM more memory/.test(err.message)) throw new ApiFailure(400, 'bad-image', err.message);
        throw e;
      }
      const config: HostedVmConfig = {
        imageDigest,
        bootArgs: spec.bootArgs,
        devices: devices.map(deviceConfig),
        memBytes: spec.memBytes,
        imageName: spec.imageName,
        // Travels in the migration's config so a destination can dial the gateway early.
        ...(spec.network !== undefined ? { gateway: spec.network.gateway } : {}),
      };
      const vm = new HostedVm({ uuid: newUuid(), name: spec.name, config, vcpu, origin: 'boot', image: spec.image });
      this.adopt(vm);
      if (spec.network !== undefined) attachNetwork(this, vm, { gateway: spec.network.gateway, exposures: spec.network.exposures, epoch: 0 });
      this.log.info({ vm: vm.name, uuid: formatUuid(vm.uuid), memBytes: spec.memBytes, image: spec.imageName, bootArgs: spec.bootArgs }, 'vm started');
      this.events.publish({ type: 'vm.created', vm: vm.name });
      return vm;
    } finally {
      this.starting.delete(spec.name);
    }
  }

  /**
   * The VM named `name` once it is here: at once if it is, else when it arrives (created, or
   * activated by an incoming migration, before its vCPU runs), or undefined after `timeoutMs` or
   * when `cancel` fires first.
   */
  whenHere(name: string, timeoutMs: number, cancel?: (stop: () => void) => void): Promise<HostedVm | undefined> {
    const vm = this.vms.get(name);
    if (vm !== undefined) return Promise.resolve(vm);
    return new Promise((resolve) => {
      let waiters = this.arrivals.get(name);
      if (waiters === undefined) this.arrivals.set(name, (waiters = new Set()));
      const done = (v: HostedVm | undefined): void => {
        clearTimeout(timer);
        waiters.delete(onArrive);
        if (waiters.size === 0 && this.arrivals.get(name) === waiters) this.arrivals.delete(name);
        resolve(v);
      };
      const onArrive = (v: HostedVm): void => done(v);
      const timer = setTimeout(() => done(undefined), timeoutMs);
      waiters.add(onArrive);
      cancel?.(() => done(undefined));
    });
  }

  /** Makes a VM (new, or arrived by migration) part of this host. */
  adopt(vm: HostedVm): void {
    if (this.vms.has(vm.name)) throw new Error(`host ${this.name} already has a VM named '${vm.name}'`);
    this.vms.set(vm.name, vm);
    const waiters = this.arrivals.get(vm.name);
    if (waiters !== undefined) for (const w of [...waiters]) w(vm);
    vm.log = this.log;
    vm.on('exit', (code) => {
      this.log.info({ vm: vm.name, exitCode: code }, 'guest powered off');
      this.events.publish({ type: 'vm.exited', vm: vm.name, exitCode: code });
    });
    vm.on('crash', (e) => {
      this.log.error({ vm: vm.name, err: e.message }, 'vCPU crashed');
      this.events.publish({ type: 'vm.crashed', vm: vm.name, message: e.message });
    });
  }

  async pause(name: string): Promise<HostedVm> {
    const vm = this.get(name);
    const s = vm.status;
    if (s !== 'running') throw ApiFailure.conflict(s === 'paused' ? `VM '${name}' is already paused` : `VM '${name}' is ${s}; only a running VM can be paused`);
    await vm.userPause();
    this.log.info({ vm: name }, 'vm paused');
    this.events.publish({ type: 'vm.paused', vm: name });
    return vm;
  }

  resume(name: string): HostedVm {
    const vm = this.get(name);
    const s = vm.status;
    if (s !== 'paused') throw ApiFailure.conflict(`VM '${name}' is ${s}, not paused`);
    vm.userResume();
    this.log.info({ vm: name }, 'vm resumed');
    this.events.publish({ type: 'vm.resumed', vm: name });
    return vm;
  }

  /**
   * Sets how much memory the guest should keep (POST /v1/vms/{name}/balloon, QEMU's `balloon`):
   * the balloon's target is the rest of its RAM. The guest's driver follows in its own time.
   */
  setBalloon(name: string, targetBytes: number): HostedVm {
    const vm = this.get(name);
    const s = vm.status;
    if (s === 'migrating') throw ApiFailure.conflict(`VM '${name}' is migrating (migration ${vm.migrationId ?? '?'}); set its balloon once it has arrived`);
    if (s === 'exited' || s === 'crashed') throw ApiFailure.conflict(`VM '${name}' is ${s}; its balloon cannot change`);
    const b = vm.balloon;
    if (b === undefined) throw ApiFailure.conflict(`VM '${name}' has no virtio-balloon device`);
    if (vm.ram.presence.absent > 0) throw ApiFailure.conflict(`VM '${name}' is still receiving ${vm.ram.presence.absent} pages by post-copy; set its balloon once that is complete`);
    if (targetBytes > vm.memBytes) throw ApiFailure.badRequest(`targetBytes ${targetBytes} is more than the VM's ${vm.memBytes} bytes of RAM`);
    if (!b.driver().live) throw ApiFailure.conflict(`VM '${name}' has no balloon driver running (the guest did not start one, e.g. munch balloon=on); its balloon cannot change`);
    b.setTarget((vm.memBytes - targetBytes) / PAGE_SIZE);
    this.log.info({ vm: name, targetBytes }, 'balloon target set');
    return vm;
  }

  /** Stops the VM and frees its RAM (DELETE /v1/vms/{name}). */
  async remove(name: string): Promise<VmInfo> {
    const vm = this.get(name);
    if (vm.status === 'migrating') {
      throw ApiFailure.conflict(`VM '${name}' is migrating (migration ${vm.migrationId ?? '?'}); cancel the migration first`);
    }
    const info = await vm.info(this.name);
    this.vms.delete(name);
    // A post-copy receiver may still write this RAM: it must never back another VM (and its
    // vCPU may be waiting for a page: end the thread rather than wait for it to retire).
    const filling = this.filling.has(name);
    await vm.stop({ why: 'deleted' }, filling ? undefined : this.threads);
    if (!filling) this.ramPool.put(vm.ram);
    this.log.info({ vm: name }, 'vm stopped and freed');
    this.events.publish({ type: 'vm.deleted', vm: name });
    return info;
  }

  /** Pages of VM `name` arrive by post-copy (true) or have all arrived or stopped for good (false). */
  pagesArriving(name: string, arriving: boolean): void {
    if (arriving) this.filling.add(name);
    else this.filling.delete(name);
  }

  /** The VM now runs elsewhere: end its vCPU here and forget it. */
  async handedOver(vm: HostedVm, migration: string, destination: string, to: string): Promise<void> {
    if (this.vms.get(vm.name) === vm) this.vms.delete(vm.name);
    await vm.stop({ why: 'migrated', migration, destination, to }, this.threads);
    this.ramPool.put(vm.ram);
    this.events.publish({ type: 'vm.departed', vm: vm.name, migration, destination });
  }

  info(api: string, migration: string | null, migrations: { outgoing: number; incoming: number }): HostInfo {
    const used = this.usedBytes();
    const reserved = this.reservedBytes();
    return {
      name: this.name,
      version: TERN_VERSION,
      apiVersion: API_VERSION,
      api,
      migration,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      vms: this.vms.size,
      memory: { maxBytes: this.maxMemBytes, usedBytes: used, reservedBytes: reserved, freeBytes: Math.max(0, this.maxMemBytes - used - reserved), pooledBytes: this.ramPool.bytes, prefaultedBytes: this.prefaultedBytes },
      warmThreads: this.threads.size,
      spareThreads: this.threads.spares,
      warmUps: this.warmUps,
      warmUpTraffic: { ...this.warmUpTraffic },
      hugePages: this.hugePages.note,
      migrations,
    };
  }

  /** From now on, refuse new VMs and incoming migrations (daemon shutdown begins). */
  refuseNew(): void {
    this.closing = true;
  }

  /** Stops every VM (daemon shutdown). */
  async shutdown(): Promise<void> {
    this.closing = true;
    const all = [...this.vms.values()];
    this.vms.clear();
    await Promise.allSettled(all.map((vm) => vm.stop({ why: 'shutdown' })));
    await this.threads.close();
  }
}
