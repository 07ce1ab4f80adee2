import { Bus } from './bus.js';
import { VirtualClock } from './clock.js';
import { ConsoleLog } from './console-log.js';
import { Hart, StopReason } from './cpu/hart.js';
import { Clint } from './devices/clint.js';
import { Plic } from './devices/plic.js';
import { SifiveTest } from './devices/sifive-test.js';
import { Uart16550 } from './devices/uart16550.js';
import { VirtioBalloon } from './devices/virtio/balloon.js';
import { slotOfDevice, type VirtioDeviceSpec } from './devices/virtio/device-spec.js';
import { GuestDma } from './devices/virtio/guest-dma.js';
import { VirtioMmio, type DeviceLog, type VirtioBackend } from './devices/virtio/mmio-transport.js';
import { VirtioVsock, allocateVsockRings, type VsockRings } from './devices/virtio/vsock.js';
import { buildBoardFdt, placeFdt } from './fdt.js';
import { loadImage, type ImageFormat } from './loader.js';
import { CLINT_BASE, CLINT_SIZE, PLIC_BASE, PLIC_SIZE, TEST_BASE, TEST_SIZE, UART0_BASE, UART0_IRQ, UART0_SIZE, VIRTIO_BASE, VIRTIO_COUNT, VIRTIO_IRQ, VIRTIO_SIZE } from './memory/layout.js';
import { GuestRam } from './memory/ram.js';
import { StateReader, StateWriter, type Stateful } from './state/codec.js';
import { encodeSnapshot, restoreSnapshot } from './state/snapshot.js';

/** What a fresh machine boots: the image file's bytes and the kernel command line. */
export interface BootSpec {
  readonly image: Uint8Array;
  /** The image's file name, for errors and for choosing raw vs ELF. */
  readonly imageName: string;
  readonly bootargs: string;
  readonly format?: ImageFormat;
}

export interface BootInfo {
  readonly entry: number;
  readonly fdtAddr: number;
  readonly fdtBytes: number;
  readonly format: 'elf' | 'raw';
}

/** What a machine is built with beyond the fixed board. */
export interface MachineOptions {
  /** virtio devices, in order: the first takes slot 7 (as on QEMU's virt), the next slot 6, ... */
  readonly devices?: readonly VirtioDeviceSpec[];
  /** The vsock device's packet rings (the host creates them with the VM); allocated here when absent. */
  readonly vsockRings?: VsockRings;
}

/** The virtual clock as a state section: its value travels with the VM. */
class ClockState implements Stateful {
  readonly stateId = 'clock';
  readonly stateVersion = 1;
  constructor(private readonly clock: VirtualClock) {}
  saveState(w: StateWriter): void {
    w.f64(this.clock.ticks());
  }
  restoreState(r: StateReader): void {
    const t = r.f64();
    if (!Number.isSafeInteger(t) || t < 0) r.fail(`mtime ${t} is not a valid tick count`);
    this.clock.set(t);
  }
}

/**
 * The RV32 computer laid out as QEMU's virt board: one hart, RAM, CLINT, PLIC, UART, test
 * finisher. It runs on whatever thread calls runSlice (the vCPU worker in a VM, the test itself
 * in unit tests). Knows nothing of hosts or migration.
 */
export class Machine {
  readonly ram: GuestRam;
  readonly bus: Bus;
  readonly clock: VirtualClock;
  readonly hart: Hart;
  readonly clint: Clint;
  readonly plic: Plic;
  readonly uart: Uart16550;
  readonly test: SifiveTest;
  readonly console = new ConsoleLog();
  /** The 8 virtio-mmio slots (index = slot); empty ones answer as QEMU's empty transports. */
  readonly virtio: readonly VirtioMmio[];
  readonly vsock: VirtioVsock | undefined;
  readonly balloon: VirtioBalloon | undefined;
  /** The vsock device's rings (shared with the host thread). */
  readonly vsockRings: VsockRings | undefined;
  /** Called for every byte the guest writes to its console (after it is logged). */
  onOutput: (byte: number) => void = () => {};
  /** Device problems worth a log line (malformed queues, dropped packets). */
  onDeviceLog: DeviceLog = () => {};
  private readonly parts: readonly Stateful[];
  /** Slots with a device, polled before every slice. */
  private readonly liveSlots: readonly VirtioMmio[];

  constructor(ram: GuestRam, clock: VirtualClock = new VirtualClock(), opts: MachineOptions = {}) {
    this.ram = ram;
    this.clock = clock;
    this.bus = new Bus(ram);
    this.hart = new Hart(this.bus, clock, 0);
    const setMip = (mask: number, level: boolean): void => this.hart.setPending(mask, level);
    this.clint = new Clint(clock, setMip);
    this.plic = new Plic(setMip);
    this.uart = new Uart16550((byte) => {
      this.console.push(byte);
      this.onOutput(byte);
    }, this.plic, UART0_IRQ);
    this.test = new SifiveTest(this.bus);
    this.bus.map(TEST_BASE, TEST_SIZE, this.test);
    this.bus.map(CLINT_BASE, CLINT_SIZE, this.clint);
    this.bus.map(PLIC_BASE, PLIC_SIZE, this.plic);
    this.bus.map(UART0_BASE, UART0_SIZE, this.uart);
    // Devices reach RAM under the hart's rules: wait for absent pages, mark the dirty log.
    const hart = this.hart;
    const dma = new GuestDma(ram, {
      dirtyLogOn: () => hart.dirtyLogOn,
      presenceOn: () => hart.presenceOn,
      waitPage: (page) => hart.onAbsentPage(page),
    });
    const backends: Array<VirtioBackend | undefined> = new Array<VirtioBackend | undefined>(VIRTIO_COUNT).fill(undefined);
    let vsock: VirtioVsock | undefined;
    let balloon: VirtioBalloon | undefined;
    let rings: VsockRings | undefined;
    (opts.devices ?? []).forEach((d, i) => {
      if (i >= VIRTIO_COUNT) throw new RangeError(`at most ${VIRTIO_COUNT} virtio devices fit the board`);
      if (d.kind === 'virtio-vsock') {
        rings = opts.vsockRings ?? allocateVsockRings();
        vsock = new VirtioVsock({ guestCid: d.guestCid, rings, signals: ram.signals });
        backends[slotOfDevice(i)] = vsock;
      } else {
        balloon = new VirtioBalloon({ signals: ram.signals });
        backends[slotOfDevice(i)] = balloon;
      }
    });
    this.vsock = vsock;
    this.balloon = balloon;
    this.vsockRings = rings;
    const log: DeviceLog = (level, message, fields) => this.onDeviceLog(level, message, fields);
    const slots: VirtioMmio[] = [];
    for (let i = 0; i < VIRTIO_COUNT; i++) {
      const t = new VirtioMmio({ slot: i, irq: this.plic, irqLine: VIRTIO_IRQ + i, dma, backend: backends[i], log });
      this.bus.map(VIRTIO_BASE + i * VIRTIO_SIZE, VIRTIO_SIZE, t);
      slots.push(t);
    }
    this.virtio = slots;
    this.liveSlots = slots.filter((t) => t.device !== undefined);
    const deviceParts: Stateful[] = [];
    for (const t of this.liveSlots) deviceParts.push(t, t.device!);
    this.parts = [this.hart, new ClockState(clock), this.clint, this.plic, this.uart, this.test, this.console, ...deviceParts];
  }

  /** Loads the image and the device tree into RAM and resets the hart to the entry point. */
  boot(spec: BootSpec): BootInfo {
    const loaded = loadImage(spec.image, this.ram, { format: spec.format ?? 'auto', name: spec.imageName });
    const fdt = buildBoardFdt({ ramBytes: this.ram.bytes, bootargs: spec.bootargs });
    // Where QEMU puts it for -bios none; refused (FdtPlacementError) if it would land on the image.
    const fdtAddr = placeFdt(this.ram, fdt, loaded.highAddr);
    this.hart.reset(loaded.entry, 0, fdtAddr);
    return { entry: loaded.entry, fdtAddr, fdtBytes: fdt.length, format: loaded.format };
  }

  /** Brings device interrupt lines up to date and runs up to `budget` instructions. */
  runSlice(budget: number): StopReason {
    // Device work from the host side (packets, balloon commands) first, so its interrupts count.
    const live = this.liveSlots;
    for (let i = 0; i < live.length; i++) live[i]!.poll();
    this.clint.update();
    return this.hart.run(budget);
  }

  /** Runs until the guest exits or `maxInstructions` pass, skipping wfi sleeps (tests and tools). */
  runToExit(maxInstructions: number): { exited: boolean; code: number; instructions: number } {
    const start = this.hart.instret;
    // Budget, not retired instructions, bounds the loop: a guest in a trap loop retires none.
    let left = maxInstructions;
    while (left > 0) {
      const r = this.runSlice(Math.min(100_000, left));
      left -= this.hart.budgetUsed;
      if (r === StopReason.Exit) return { exited: true, code: this.bus.exitCode, instructions: this.hart.instret - start };
      if (r === StopReason.Wfi) {
        // Nobody to wait for: jump the clock to the next timer deadline.
        const d = this.clint.deadline();
        if (Number.isFinite(d) && d > this.clock.ticks()) this.clock.set(d);
      }
    }
    return { exited: false, code: 0, instructions: this.hart.instret - start };
  }

  /** Every non-RAM part of the machine, in state-file order. */
  get stateParts(): readonly Stateful[] {
    return this.parts;
  }

  /** `consoleFrom`: the console section carries only the output from that position on (ConsoleLog.saveFrom). */
  saveState(consoleFrom = 0): Uint8Array {
    this.console.saveFrom = consoleFrom;
    try {
      return encodeSnapshot(this.parts);
    } finally {
      this.console.saveFrom = 0;
    }
  }

  /** Restores into this (fresh) machine; on error the machine must be discarded. */
  restoreState(bytes: Uint8Array): void {
    restoreSnapshot(bytes, this.parts);
  }
}
