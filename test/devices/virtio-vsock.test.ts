import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VsockHost } from '../../src/machine/devices/virtio/vsock-host-port.js';
import { PacketRing } from '../../src/machine/devices/virtio/packet-ring.js';
import {
  VSOCK_HDR_BYTES,
  VsockOp,
  VsockType,
  decodeVsockHeader,
  encodeVsockPacket,
} from '../../src/machine/devices/virtio/vsock-packet.js';
import { Machine } from '../../src/machine/machine.js';
import { VIRTIO_IRQ } from '../../src/machine/memory/layout.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { R, TestDriver, busPort } from './virtio-driver.js';

const MiB = 1024 * 1024;
const SLOT = 7;
const LINE = VIRTIO_IRQ + SLOT;
const RX = 0;
const TX = 1;
const EVENT = 2;

function setup(guestCid = 3): { m: Machine; d: TestDriver; host: VsockHost; events: number[] } {
  const m = new Machine(GuestRam.allocate(4 * MiB), undefined, { devices: [{ kind: 'virtio-vsock', guestCid }] });
  m.plic.write(4 * LINE, 4, 1);
  m.plic.write(0x2000, 4, 1 << LINE);
  const d = new TestDriver(m.ram, busPort(m, SLOT));
  assert.equal(d.negotiate(0, 1), true);
  for (const q of [RX, TX, EVENT]) d.setupQueue(q, 16);
  d.driverOk();
  const events: number[] = [];
  const host = new VsockHost({ guestCid, rings: m.vsockRings!, signals: m.ram.signals, postEvent: (id) => m.vsock!.postEvent(id) });
  return { m, d, host, events };
}

function packet(srcPort: number, payload: string): Uint8Array {
  return encodeVsockPacket(
    { srcCid: 3, dstCid: 2, srcPort, dstPort: 6379, type: VsockType.Stream, op: VsockOp.Rw, flags: 0, bufAlloc: 65536, fwdCnt: 0 },
    new TextEncoder().encode(payload),
  );
}

function drainToHost(m: Machine): Uint8Array[] {
  const out: Uint8Array[] = [];
  const r = m.vsock!.toHost;
  for (let p = r.shift(); p !== undefined; p = r.shift()) out.push(p);
  return out;
}

test('header codec: offsets and little-endian fields round-trip', () => {
  const p = encodeVsockPacket({ srcCid: 0x1_0000_0003, dstCid: 2, srcPort: 0xdeadbeef, dstPort: 80, type: VsockType.Stream, op: VsockOp.Request, flags: 3, bufAlloc: 262144, fwdCnt: 17 }, new Uint8Array([9, 8, 7]));
  assert.equal(p.length, VSOCK_HDR_BYTES + 3);
  assert.deepEqual([...p.subarray(0, 8)], [3, 0, 0, 0, 1, 0, 0, 0], 'src_cid u64 LE');
  assert.deepEqual([...p.subarray(16, 20)], [0xef, 0xbe, 0xad, 0xde], 'src_port LE at 16');
  assert.deepEqual([...p.subarray(24, 28)], [3, 0, 0, 0], 'len at 24');
  assert.deepEqual([...p.subarray(28, 32)], [1, 0, 1, 0], 'type at 28, op at 30');
  const h = decodeVsockHeader(p);
  assert.deepEqual(h, { srcCid: 0x1_0000_0003, dstCid: 2, srcPort: 0xdeadbeef, dstPort: 80, len: 3, type: 1, op: 1, flags: 3, bufAlloc: 262144, fwdCnt: 17 });
  assert.throws(() => decodeVsockHeader(new Uint8Array(43)), RangeError);
});

test('config space: guest_cid as a little-endian u64, read-only', () => {
  const { d } = setup(0x1234_5678);
  assert.equal(d.mmio.read(R.Config), 0x1234_5678);
  assert.equal(d.mmio.read(R.Config + 4), 0);
  assert.equal(d.mmio.read(R.Config + 1, 1), 0x56);
  assert.equal(d.mmio.read(R.Config + 2, 2), 0x1234);
  d.mmio.write(R.Config, 99);
  assert.equal(d.mmio.read(R.Config), 0x1234_5678);
});

test('tx: a chain spanning descriptors lands in the guest→host ring byte-exact, in order, and is marked used', () => {
  const { m, d } = setup();
  const a = packet(1000, 'hello');
  const b = packet(1001, 'x'.repeat(3000));
  d.add(TX, [{ data: a.subarray(0, VSOCK_HDR_BYTES) }, { data: a.subarray(VSOCK_HDR_BYTES) }]);
  d.add(TX, [{ data: b.subarray(0, 10) }, { data: b.subarray(10, 44) }, { data: b.subarray(44) }]);
  const bell = Atomics.load(m.ram.signals, 10);
  d.notify(TX);
  assert.equal(d.usedIdx(TX), 2);
  assert.equal(d.usedElem(TX, 0).len, 0);
  assert.ok(Atomics.load(m.ram.signals, 10) > bell, 'Sig.VsockToHost bumped');
  const got = drainToHost(m);
  assert.deepEqual(got, [a, b]);
});

test('rx: a host packet goes whole into a posted buffer, with its used length and an interrupt', () => {
  const { m, d, host } = setup();
  const hdr = d.add(RX, [{ len: VSOCK_HDR_BYTES, write: true }, { len: 4096, write: true }]);
  const p = packet(7, 'pong from the host');
  assert.equal(host.send(p), true);
  assert.equal(d.usedIdx(RX), 0, 'nothing moves until the machine runs');
  m.runSlice(0);
  assert.equal(d.usedIdx(RX), 1);
  assert.deepEqual(d.usedElem(RX, 0), { id: hdr.head, len: p.length });
  const got = new Uint8Array([...d.bytes(hdr.addrs[0]!, VSOCK_HDR_BYTES), ...d.bytes(hdr.addrs[1]!, p.length - VSOCK_HDR_BYTES)]);
  assert.deepEqual(got, p);
  assert.equal(d.mmio.read(R.InterruptStatus) & 1, 1);
  assert.equal((m.plic.read(0x1000, 4) >>> LINE) & 1, 1, 'PLIC source pending');
});

test('rx: packets wait for buffers; a packet bigger than the posted buffer is dropped and the buffer kept', () => {
  const { m, d, host } = setup();
  const big = packet(1, 'y'.repeat(500));
  const small = packet(2, 'ok');
  host.send(big);
  host.send(small);
  m.runSlice(0);
  assert.equal(host.freeBytes < m.vsock!.toGuest.capacity, true, 'both still queued without buffers');
  const buf = d.add(RX, [{ len: 100, write: true }]);
  m.runSlice(0);
  assert.equal(d.usedIdx(RX), 1);
  assert.deepEqual(d.usedElem(RX, 0), { id: buf.head, len: small.length });
  assert.deepEqual(d.bytes(buf.addrs[0]!, small.length), small);
  assert.equal(host.freeBytes, m.vsock!.toGuest.capacity, 'the big one was dropped, not left behind');
});

test('ring full: the tx chain stays available and goes once the host has drained the ring', () => {
  const { m, d, host } = setup();
  const ring = m.vsock!.toHost;
  // Leave less room than the next packet needs.
  assert.equal(ring.push(new Uint8Array(ring.capacity - 4 - 100)), true);
  const p = packet(5, 'z'.repeat(200));
  d.add(TX, [{ data: p }]);
  d.notify(TX);
  assert.equal(d.usedIdx(TX), 0, 'not taken');
  m.runSlice(0);
  assert.equal(d.usedIdx(TX), 0, 'still not taken while full');
  const drained: Uint8Array[] = [];
  const bell = Atomics.load(m.ram.signals, 0);
  host.onPacket((p) => drained.push(p));
  host.flushFromGuest();
  assert.equal(drained.length, 1);
  assert.equal(drained[0]!.length, ring.capacity - 104);
  assert.ok(Atomics.load(m.ram.signals, 0) > bell, 'draining a ring the device waits on rings the doorbell');
  m.runSlice(0);
  assert.equal(d.usedIdx(TX), 1, 'retried after the host made room');
  host.flushFromGuest();
  assert.deepEqual(drained.slice(1), [p]);
});

test('host port: send refuses what does not fit; takeUndelivered returns queued packets; flushFromGuest delivers in order', () => {
  const { m, d, host } = setup();
  const ring = m.vsock!.toGuest;
  assert.equal(host.send(new Uint8Array(ring.capacity)), false, 'too big for the ring: nothing queued');
  assert.equal(host.freeBytes, ring.capacity);
  const a = packet(1, 'a');
  const b = packet(2, 'b');
  host.send(a);
  host.send(b);
  assert.deepEqual(host.takeUndelivered(), [a, b]);
  assert.equal(host.freeBytes, ring.capacity);
  const got: Uint8Array[] = [];
  d.add(TX, [{ data: a }]);
  d.add(TX, [{ data: b }]);
  d.notify(TX);
  host.onPacket((p) => got.push(p));
  host.flushFromGuest();
  assert.deepEqual(got, [a, b]);
});

test('events: postEvent fills an event buffer with the le32 id, now or once one is posted', () => {
  const { d, host } = setup();
  host.postEvent(0);
  assert.equal(d.usedIdx(EVENT), 0, 'no buffer yet');
  const e = d.add(EVENT, [{ data: new Uint8Array([0xff, 0xff, 0xff, 0xff]), write: true }]);
  d.notify(EVENT);
  assert.equal(d.usedIdx(EVENT), 1);
  assert.deepEqual(d.usedElem(EVENT, 0), { id: e.head, len: 4 });
  assert.deepEqual([...d.bytes(e.addrs[0]!, 4)], [0, 0, 0, 0]);
});

test('state round trip mid-traffic: a fresh machine continues the queues where they were', () => {
  const { m, d, host } = setup();
  d.add(TX, [{ data: packet(1, 'before') }]);
  d.notify(TX);
  d.add(RX, [{ len: 256, write: true }]);
  host.send(packet(9, 'to guest 1'));
  m.runSlice(0);
  d.add(RX, [{ len: 256, write: true }]); // posted, still empty at save time
  host.postEvent(0); // no event buffer yet: pending in the device state
  const state = m.saveState();

  const m2 = new Machine(GuestRam.allocate(4 * MiB), undefined, { devices: [{ kind: 'virtio-vsock', guestCid: 3 }] });
  m2.ram.u8.set(m.ram.u8);
  m2.restoreState(state);
  const d2 = new TestDriver(m2.ram, busPort(m2, SLOT));
  for (const [q, l] of d.queues) d2.queues.set(q, { ...l });
  assert.equal(d2.mmio.read(R.Status), 0xf);
  const host2 = new VsockHost({ guestCid: 3, rings: m2.vsockRings!, signals: m2.ram.signals, postEvent: (id) => m2.vsock!.postEvent(id) });
  const p2 = packet(9, 'to guest 2');
  host2.send(p2);
  m2.runSlice(0);
  assert.equal(d2.usedIdx(RX), 2, 'the buffer posted before the save is used after it');
  assert.equal(d2.usedElem(RX, 1).len, p2.length);
  const after = packet(1, 'after');
  d2.add(TX, [{ data: after }]);
  d2.notify(TX);
  assert.equal(d2.usedIdx(TX), 2);
  assert.deepEqual(drainToHost(m2), [after]);
  d2.add(EVENT, [{ len: 4, write: true }]);
  d2.notify(EVENT);
  assert.equal(d2.usedIdx(EVENT), 1, 'the pending event travelled');
});

test('restoring into a machine with a different cid or no vsock is refused', () => {
  const { m } = setup(3);
  const state = m.saveState();
  assert.throws(() => new Machine(GuestRam.allocate(4 * MiB), undefined, { devices: [{ kind: 'virtio-vsock', guestCid: 4 }] }).restoreState(state), /guest_cid/);
  assert.throws(() => new Machine(GuestRam.allocate(4 * MiB)).restoreState(state), /unknown section/);
});

test('packet ring: records wrap around the end intact', () => {
  const ring = new PacketRing(PacketRing.allocate(64));
  for (let round = 0; round < 20; round++) {
    const p = Uint8Array.from({ length: 7 + (round % 5) * 5 }, (_, i) => (i * 31 + round) & 0xff);
    assert.equal(ring.push(p), true);
    assert.deepEqual(ring.shift(), p);
  }
  assert.equal(ring.push(new Uint8Array(61)), false, 'a record needs its length word too');
  assert.equal(ring.push(new Uint8Array(60)), true);
  assert.equal(ring.free, 0);
});
