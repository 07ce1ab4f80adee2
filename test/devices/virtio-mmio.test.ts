import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Machine } from '../../src/machine/machine.js';
import { PAGE_SIZE, RAM_BASE, VIRTIO_IRQ } from '../../src/machine/memory/layout.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { buildBoardFdt, parseFdt } from '../../src/machine/fdt.js';
import { ACK, DRIVER, DRIVER_OK, F_INDIRECT, F_NEXT, F_WRITE, FEATURES_OK, NEEDS_RESET, R, TestDriver, busPort } from './virtio-driver.js';

const MiB = 1024 * 1024;
const VSOCK_SLOT = 7;
const BALLOON_SLOT = 6;

function machine(): Machine {
  return new Machine(GuestRam.allocate(4 * MiB), undefined, { devices: [{ kind: 'virtio-vsock', guestCid: 3 }, { kind: 'virtio-balloon' }] });
}

function enableIrq(m: Machine, line: number): void {
  m.plic.write(4 * line, 4, 1);
  m.plic.write(0x2000 + 4 * (line >>> 5), 4, 1 << (line & 31));
}

function irqPending(m: Machine, line: number): boolean {
  return ((m.plic.read(0x1000 + 4 * (line >>> 5), 4) >>> (line & 31)) & 1) === 1;
}

/** A vsock driver with rx (0), tx (1) and event (2) queues of `num` entries, DRIVER_OK set. */
function vsockDriver(m: Machine, num = 8): TestDriver {
  const d = new TestDriver(m.ram, busPort(m, VSOCK_SLOT));
  assert.equal(d.negotiate(0, 1), true);
  for (const q of [0, 1, 2]) d.setupQueue(q, num);
  d.driverOk();
  return d;
}

test('empty slots answer like QEMU: magic, version 2, vendor, device id 0; devices take slots from the top', () => {
  const m = new Machine(GuestRam.allocate(4 * MiB), undefined, { devices: [{ kind: 'virtio-vsock', guestCid: 3 }, { kind: 'virtio-balloon' }] });
  for (let slot = 0; slot < 8; slot++) {
    const p = busPort(m, slot);
    assert.equal(p.read(R.Magic), 0x74726976, `slot ${slot} magic`);
    assert.equal(p.read(R.Version), 2);
    assert.equal(p.read(R.VendorId), 0x554d4551);
    assert.equal(p.read(R.DeviceId), slot === VSOCK_SLOT ? 19 : slot === BALLOON_SLOT ? 5 : 0, `slot ${slot} device id`);
  }
  const empty = busPort(m, 0);
  empty.write(R.Status, 0xf);
  assert.equal(empty.read(R.Status), 0, 'writes to an empty slot do nothing');
  assert.equal(busPort(m, VSOCK_SLOT).read(R.Magic, 2), 0, 'non-32-bit register reads return 0');
});

test('the device tree describes the 8 slots as QEMU virt does', () => {
  const { root } = parseFdt(buildBoardFdt({ ramBytes: 4 * MiB, bootargs: '' }));
  for (let i = 0; i < 8; i++) {
    const base = 0x1000_1000 + i * 0x1000;
    const n = root.find(`soc/virtio_mmio@${base.toString(16)}`);
    assert.ok(n, `node for slot ${i}`);
    assert.equal(n.getString('compatible'), 'virtio,mmio');
    assert.deepEqual(n.getCells('reg'), [0, base, 0, 0x1000]);
    assert.equal(n.getU32('interrupts'), VIRTIO_IRQ + i);
    assert.equal(n.getU32('interrupt-parent'), root.find('soc/plic@c000000')!.getU32('phandle'));
  }
});

test('feature negotiation: VERSION_1 is offered and required, unoffered bits are refused', () => {
  const m = machine();
  const p = busPort(m, VSOCK_SLOT);
  p.write(R.DeviceFeaturesSel, 1);
  assert.equal(p.read(R.DeviceFeatures) & 1, 1, 'VERSION_1 (bit 32) offered');
  p.write(R.DeviceFeaturesSel, 0);
  assert.equal(p.read(R.DeviceFeatures), 0, 'vsock offers no low features');
  const d = new TestDriver(m.ram, p);
  assert.equal(d.negotiate(0, 0), false, 'without VERSION_1 FEATURES_OK does not stick');
  assert.equal(d.negotiate(1 << 5, 1), false, 'an unoffered bit is refused');
  assert.equal(d.negotiate(0, 1), true);
  assert.equal(p.read(R.Status), ACK | DRIVER | FEATURES_OK);
  const b = busPort(m, BALLOON_SLOT);
  b.write(R.DeviceFeaturesSel, 0);
  assert.equal(b.read(R.DeviceFeatures), (1 << 1) | (1 << 3), 'balloon: STATS_VQ and FREE_PAGE_HINT');
  assert.equal(new TestDriver(m.ram, b).negotiate((1 << 1) | (1 << 3), 1), true);
});

test('queue registers: QueueNumMax 256 for existing queues, 0 beyond; addresses read back; Status 0 resets', () => {
  const m = machine();
  const p = busPort(m, VSOCK_SLOT);
  const d = new TestDriver(m.ram, p);
  d.negotiate();
  for (const q of [0, 1, 2]) {
    p.write(R.QueueSel, q);
    assert.equal(p.read(R.QueueNumMax), 256);
  }
  p.write(R.QueueSel, 3);
  assert.equal(p.read(R.QueueNumMax), 0);
  const l = d.setupQueue(1, 16);
  p.write(R.QueueSel, 1);
  assert.equal(p.read(R.QueueNum), 16);
  assert.equal(p.read(R.QueueReady), 1);
  assert.equal(p.read(R.QueueDescLow), l.desc);
  assert.equal(p.read(R.QueueDriverLow), l.avail);
  assert.equal(p.read(R.QueueDeviceLow), l.used);
  p.write(R.QueueDescLow, 0x1234);
  assert.equal(p.read(R.QueueDescLow), l.desc, 'addresses are fixed while the queue is ready');
  p.write(R.Status, 0);
  assert.equal(p.read(R.Status), 0);
  assert.equal(p.read(R.QueueReady), 0);
  assert.equal(p.read(R.QueueNum), 0);
});

test('used buffers raise the PLIC line; InterruptACK lowers it; NO_INTERRUPT suppresses it', () => {
  const m = machine();
  const line = VIRTIO_IRQ + VSOCK_SLOT;
  enableIrq(m, line);
  const d = vsockDriver(m);
  const pkt = new Uint8Array(44);
  d.add(1, [{ data: pkt }]);
  d.notify(1);
  assert.equal(d.usedIdx(1), 1);
  assert.equal(d.mmio.read(R.InterruptStatus), 1);
  assert.equal(irqPending(m, line), true);
  d.mmio.write(R.InterruptAck, 1);
  assert.equal(d.mmio.read(R.InterruptStatus), 0);
  assert.equal(irqPending(m, line), false);
  d.setU16(d.queues.get(1)!.avail, 1); // VIRTQ_AVAIL_F_NO_INTERRUPT
  d.add(1, [{ data: pkt }]);
  d.notify(1);
  assert.equal(d.usedIdx(1), 2);
  assert.equal(d.mmio.read(R.InterruptStatus), 0, 'suppressed');
});

function expectNeedsReset(d: TestDriver, m: Machine, what: string): void {
  assert.equal(d.mmio.read(R.Status) & NEEDS_RESET, NEEDS_RESET, `${what}: DEVICE_NEEDS_RESET`);
  assert.equal(d.mmio.read(R.InterruptStatus) & 2, 2, `${what}: config-change interrupt`);
  // The device is stopped: a good chain is not processed until reset.
  const before = d.usedIdx(1);
  d.add(1, [{ data: new Uint8Array(44) }]);
  d.notify(1);
  m.runSlice(0);
  assert.equal(d.usedIdx(1), before, `${what}: nothing processed after the error`);
  d.mmio.write(R.Status, 0);
  assert.equal(d.mmio.read(R.Status), 0, `${what}: reset clears it`);
}

test('malformed chains set DEVICE_NEEDS_RESET and never throw', () => {
  const cases: Array<[string, (d: TestDriver) => void]> = [
    ['loop', (d) => {
      const l = d.queues.get(1)!;
      d.setDesc(l, 0, RAM_BASE + 0x20_0000, 44, F_NEXT, 1);
      d.setDesc(l, 1, RAM_BASE + 0x20_0100, 8, F_NEXT, 0);
      d.publish(l, 0);
    }],
    ['too long', (d) => {
      const l = d.queues.get(1)!;
      for (let i = 0; i < l.num; i++) d.setDesc(l, i, RAM_BASE + 0x20_0000, 4, F_NEXT, i + 1 < l.num ? i + 1 : 0);
      d.publish(l, 0);
    }],
    ['buffer beyond RAM', (d) => {
      const l = d.queues.get(1)!;
      d.setDesc(l, 0, RAM_BASE + 4 * MiB - 8, 44, 0, 0);
      d.publish(l, 0);
    }],
    ['buffer below RAM', (d) => {
      const l = d.queues.get(1)!;
      d.setDesc(l, 0, 0x1000_0000, 44, 0, 0);
      d.publish(l, 0);
    }],
    ['64-bit address', (d) => {
      const l = d.queues.get(1)!;
      d.setDesc(l, 0, RAM_BASE, 44, 0, 0, 1);
      d.publish(l, 0);
    }],
    ['head index beyond the queue', (d) => d.publish(d.queues.get(1)!, 200)],
    ['next index beyond the queue', (d) => {
      const l = d.queues.get(1)!;
      d.setDesc(l, 0, RAM_BASE + 0x20_0000, 44, F_NEXT, 9);
      d.publish(l, 0);
    }],
    ['indirect descriptor', (d) => {
      const l = d.queues.get(1)!;
      d.setDesc(l, 0, RAM_BASE + 0x20_0000, 16, F_INDIRECT, 0);
      d.publish(l, 0);
    }],
    ['readable after writable', (d) => {
      const l = d.queues.get(1)!;
      d.setDesc(l, 0, RAM_BASE + 0x20_0000, 8, F_NEXT | F_WRITE, 1);
      d.setDesc(l, 1, RAM_BASE + 0x20_0100, 44, 0, 0);
      d.publish(l, 0);
    }],
    ['available index far ahead', (d) => d.setU16(d.queues.get(1)!.avail + 2, 100)],
  ];
  for (const [what, make] of cases) {
    const m = machine();
    const d = vsockDriver(m, 8);
    make(d);
    assert.doesNotThrow(() => d.notify(1), what);
    expectNeedsReset(d, m, what);
  }
});

test('a queue placed outside RAM or misaligned is malformed too', () => {
  const m = machine();
  const p = busPort(m, VSOCK_SLOT);
  const d = new TestDriver(m.ram, p);
  d.negotiate();
  d.setupQueue(0, 8);
  d.setupQueue(2, 8);
  p.write(R.QueueSel, 1);
  p.write(R.QueueNum, 8);
  p.write(R.QueueDescLow, RAM_BASE + 4 * MiB - 64); // 128 bytes of descriptors do not fit
  p.write(R.QueueDriverLow, RAM_BASE + 0x1000);
  p.write(R.QueueDeviceLow, RAM_BASE + 0x2000);
  p.write(R.QueueReady, 1);
  d.driverOk();
  p.write(R.QueueNotify, 1);
  assert.equal(p.read(R.Status) & NEEDS_RESET, NEEDS_RESET);
});

test('device writes into RAM mark the dirty log when logging is on, else the written map', () => {
  const m = machine();
  const d = vsockDriver(m);
  m.ram.dirty.clear();
  d.add(1, [{ data: new Uint8Array(44) }]);
  d.notify(1);
  assert.equal(m.ram.dirty.count(), 0, 'logging off: no marks');
  const usedPageOff = Math.floor((d.queues.get(1)!.used - RAM_BASE) / PAGE_SIZE);
  assert.notEqual(m.ram.written.bits[usedPageOff], 0, 'logging off: the written map has the used ring page');
  m.hart.dirtyLogOn = true;
  const usedPage = (d.queues.get(1)!.used - RAM_BASE) / PAGE_SIZE;
  d.add(1, [{ data: new Uint8Array(44) }]);
  d.notify(1);
  const masks = new Uint8Array(m.ram.pageCount);
  assert.deepEqual([...m.ram.dirty.sync(undefined, masks)], [Math.floor(usedPage)], 'the used ring page is marked');
  assert.equal(masks[Math.floor(usedPage)], 0xff, 'a device write marks every block of its page (ALL_BLOCKS)');
});

test('device accesses to an absent page wait for it through the hart\'s hook', () => {
  const m = machine();
  const d = vsockDriver(m);
  const buf = RAM_BASE + 0x30_0000;
  d.add(1, [{ addr: buf, data: new Uint8Array(44).fill(7) }]);
  const page = (buf - RAM_BASE) / PAGE_SIZE;
  const saved = m.ram.page(page).slice();
  m.ram.presence.markAbsent(page);
  m.ram.u8.fill(0, page * PAGE_SIZE, (page + 1) * PAGE_SIZE); // the bytes are "still on the source"
  m.hart.presenceOn = true;
  const waited: number[] = [];
  m.hart.onAbsentPage = (p) => {
    waited.push(p);
    m.ram.presence.install(p, saved);
  };
  const packets: Uint8Array[] = [];
  d.notify(1);
  for (;;) {
    const len = m.vsock!.toHost.peekLength();
    if (len < 0) break;
    const b = new Uint8Array(len);
    m.vsock!.toHost.readInto(b);
    packets.push(b);
  }
  assert.deepEqual(waited, [page]);
  assert.equal(packets.length, 1);
  assert.deepEqual(packets[0], new Uint8Array(44).fill(7), 'the packet holds the installed bytes');
});

test('random register writes and random queue memory never throw out of the devices', () => {
  let seed = 0x1234_5678;
  const rnd = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const regs = Object.values(R).filter((o) => o < R.Config);
  let brokeDevice = 0;
  for (let round = 0; round < 40; round++) {
    const m = machine();
    const slot = round % 2 === 0 ? VSOCK_SLOT : BALLOON_SLOT;
    const d = new TestDriver(m.ram, busPort(m, slot));
    d.negotiate(slot === BALLOON_SLOT ? (1 << 1) | (1 << 3) : 0, 1);
    for (let q = 0; q < (slot === BALLOON_SLOT ? 4 : 3); q++) d.setupQueue(q, 1 + (rnd() % 16));
    d.driverOk();
    // Scribble over the queue areas, then poke registers at random (queue notifies most often).
    const lo = d.queues.get(0)!.desc - RAM_BASE;
    for (let i = 0; i < 2048; i++) m.ram.u8[lo + (rnd() % 4096)] = rnd() & 0xff;
    for (let i = 0; i < 300; i++) {
      const r = rnd() % 4 === 0 ? regs[rnd() % regs.length]! : R.QueueNotify;
      const v = r === R.QueueNotify ? rnd() % 5 : r === R.Status ? rnd() & 0xff : rnd();
      assert.doesNotThrow(() => {
        d.mmio.write(r, v);
        if (rnd() % 8 === 0) m.vsock!.toGuest.push(new Uint8Array(rnd() % 200));
        m.runSlice(0);
        d.mmio.read(R.Config + (rnd() % 16), 1);
      }, `round ${round} step ${i}`);
      if ((d.mmio.read(R.Status) & NEEDS_RESET) !== 0) brokeDevice++;
    }
  }
  assert.ok(brokeDevice > 0, 'the garbage did reach the chain checks');
});
