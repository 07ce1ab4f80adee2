// The host vsock endpoint's state machine, driven by hand-made virtio_vsock_hdr packets: connect,
// credit both ways, SHUTDOWN/RST, state across a migration, and malformed guest packets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VsockOp, encodeVsockPacket, decodeVsockHeader, VSOCK_HDR_BYTES } from '../../src/machine/devices/virtio/vsock-packet.js';
import type { VsockHostPort } from '../../src/machine/devices/virtio/vsock-host-port.js';
import { ResetReason } from '../../src/net/link-protocol.js';
import { OUT_BUF_ALLOC, VsockEndpoint, type StreamUpstream } from '../../src/net/vsock-endpoint.js';
import { silentLogger } from '../../src/util/log.js';

/** The device's host-thread end, played by the test: `ring` is what the guest has yet to take. */
class HandPort implements VsockHostPort {
  readonly guestCid = 3;
  ring: Uint8Array[] = [];
  capacity = 1 << 20;
  private cb: ((p: Uint8Array) => void) | undefined;
  send(packet: Uint8Array): boolean {
    if (packet.length + 4 > this.freeBytes) return false;
    this.ring.push(packet.slice());
    return true;
  }
  get freeBytes(): number {
    return this.capacity - this.ring.reduce((n, p) => n + p.length + 4, 0);
  }
  onPacket(cb: (packet: Uint8Array) => void): void {
    this.cb = cb;
  }
  flushFromGuest(): void {}
  takeUndelivered(): Uint8Array[] {
    const r = this.ring;
    this.ring = [];
    return r;
  }
  postEvent(): void {}
  /** The guest sends a packet. */
  guest(p: Uint8Array): void {
    this.cb!(p);
  }
  /** Takes what the guest would receive, decoded. */
  take(): { op: number; srcPort: number; dstPort: number; flags: number; bufAlloc: number; fwdCnt: number; payload: string }[] {
    return this.takeUndelivered().map((p) => {
      const h = decodeVsockHeader(p);
      assert.equal(h.len, p.length - VSOCK_HDR_BYTES);
      assert.equal(h.srcCid, 2);
      assert.equal(h.dstCid, 3);
      assert.equal(h.type, 1);
      return { op: h.op, srcPort: h.srcPort, dstPort: h.dstPort, flags: h.flags, bufAlloc: h.bufAlloc, fwdCnt: h.fwdCnt, payload: Buffer.from(p.subarray(VSOCK_HDR_BYTES)).toString('latin1') };
    });
  }
}

class Recorder implements StreamUpstream {
  events: string[] = [];
  out = '';
  opened(id: number): void {
    this.events.push(`opened ${id}`);
  }
  data(id: number, seq: number, bytes: Uint8Array): void {
    this.events.push(`data ${id} ${seq} ${bytes.length}`);
    this.out += Buffer.from(bytes).toString('latin1');
  }
  fin(id: number, seq: number): void {
    this.events.push(`fin ${id} ${seq}`);
  }
  ack(id: number, seq: number): void {
    this.events.push(`ack ${id} ${seq}`);
  }
  reset(id: number, reason: ResetReason): void {
    this.events.push(`reset ${id} ${reason}`);
  }
  closed(id: number): void {
    this.events.push(`closed ${id}`);
  }
  take(): string[] {
    const e = this.events;
    this.events = [];
    return e;
  }
}

function fromGuest(op: VsockOp, hostPort: number, payload = '', o: { flags?: number; bufAlloc?: number; fwdCnt?: number; guestPort?: number; srcCid?: number } = {}): Uint8Array {
  return encodeVsockPacket({ srcCid: o.srcCid ?? 3, dstCid: 2, srcPort: o.guestPort ?? 6379, dstPort: hostPort, type: 1, op, flags: o.flags ?? 0, bufAlloc: o.bufAlloc ?? 8192, fwdCnt: o.fwdCnt ?? 0 }, Buffer.from(payload, 'latin1'));
}

function setup(): { port: HandPort; ep: VsockEndpoint; up: Recorder; hostPort: number } {
  const port = new HandPort();
  const ep = new VsockEndpoint(port, silentLogger, 'vm');
  const up = new Recorder();
  ep.setUpstream(up);
  ep.open(7, 6379);
  const [req] = port.take();
  assert.equal(req!.op, VsockOp.Request);
  assert.equal(req!.dstPort, 6379);
  assert.equal(req!.bufAlloc, OUT_BUF_ALLOC);
  port.guest(fromGuest(VsockOp.Response, req!.srcPort));
  assert.deepEqual(up.take(), ['opened 7']);
  return { port, ep, up, hostPort: req!.srcPort };
}

/** The endpoint as the destination restores it from `state`: started, then given a fresh upstream. `undelivered`: what it put back in the guest's ring. */
function arrive(state: Uint8Array): { port: HandPort; ep: VsockEndpoint; up: Recorder; undelivered: ReturnType<HandPort['take']> } {
  const port = new HandPort();
  const ep = new VsockEndpoint(port, silentLogger, 'vm');
  ep.restoreState(state);
  ep.start();
  const undelivered = port.take();
  const up = new Recorder();
  ep.setUpstream(up);
  return { port, ep, up, undelivered };
}

test('REQUEST carries the exact header; RESPONSE opens; RST refuses', () => {
  const port = new HandPort();
  const ep = new VsockEndpoint(port, silentLogger, 'vm');
  const up = new Recorder();
  ep.setUpstream(up);
  ep.open(1, 80);
  const raw = port.ring[0]!;
  assert.deepEqual([...raw], [
    2, 0, 0, 0, 0, 0, 0, 0, // src_cid 2
    3, 0, 0, 0, 0, 0, 0, 0, // dst_cid 3
    0x00, 0xc0, 0, 0, // src_port 49152
    80, 0, 0, 0, // dst_port
    0, 0, 0, 0, // len
    1, 0, // type stream
    1, 0, // op REQUEST
    0, 0, 0, 0, // flags
    0, 0, 4, 0, // buf_alloc 256 KiB
    0, 0, 0, 0, // fwd_cnt
  ]);
  port.take();
  port.guest(fromGuest(VsockOp.Rst, 49152, '', { guestPort: 80 }));
  assert.deepEqual(up.take(), [`reset 1 ${ResetReason.Refused}`, 'closed 1']);
  assert.equal(ep.connectionCount, 0);
  assert.deepEqual(port.take(), [], 'no RST answers an RST');
});

test('client→VM bytes respect the guest credit; more flows once it is updated', () => {
  const { port, ep, up, hostPort } = setup();
  const data = Buffer.alloc(10000, 0x41);
  ep.data(7, 0, data);
  const got = port.take();
  assert.deepEqual(got.map((p) => [p.op, p.payload.length]), [[VsockOp.Rw, 4096], [VsockOp.Rw, 4096], [VsockOp.CreditRequest, 0]]);
  assert.deepEqual(up.take(), ['ack 7 8192']);
  // Duplicate bytes (a resend) are skipped, not delivered twice.
  ep.data(7, 5000, data.subarray(5000));
  assert.deepEqual(port.take(), []);
  port.guest(fromGuest(VsockOp.CreditUpdate, hostPort, '', { fwdCnt: 8192 }));
  const more = port.take();
  assert.deepEqual(more.map((p) => [p.op, p.payload.length]), [[VsockOp.Rw, 1808]]);
  assert.deepEqual(up.take(), ['ack 7 10000']);
});

test('VM→client bytes go upstream with offsets; credit beyond buf_alloc is a reset', () => {
  const { port, ep, up, hostPort } = setup();
  port.guest(fromGuest(VsockOp.Rw, hostPort, 'hello'));
  port.guest(fromGuest(VsockOp.Rw, hostPort, ' world'));
  assert.deepEqual(up.take(), ['data 7 0 5', 'data 7 5 6']);
  assert.equal(up.out, 'hello world');
  // A small ack is not worth a packet while the guest has plenty of credit...
  ep.ack(7, 11);
  assert.deepEqual(port.take(), []);
  // ...16 KiB is; and the fwd_cnt rides on every packet we send anyway.
  for (let i = 0; i < 4; i++) port.guest(fromGuest(VsockOp.Rw, hostPort, 'y'.repeat(4096)));
  up.take();
  ep.ack(7, 11 + 16384);
  assert.deepEqual(port.take().map((p) => [p.op, p.fwdCnt]), [[VsockOp.CreditUpdate, 11 + 16384]]);
  // Near the end of its credit, any progress is told at once.
  for (let i = 0; i < 55; i++) port.guest(fromGuest(VsockOp.Rw, hostPort, 'z'.repeat(4096)));
  up.take();
  ep.ack(7, 11 + 16384 + 100);
  assert.deepEqual(port.take().map((p) => [p.op, p.fwdCnt]), [[VsockOp.CreditUpdate, 11 + 16384 + 100]]);
  // A guest that ignores our buf_alloc is reset.
  const big = 'x'.repeat(60000);
  for (let i = 0; i < 5; i++) port.guest(fromGuest(VsockOp.Rw, hostPort, big));
  const ev = up.take();
  assert.ok(ev.includes(`reset 7 ${ResetReason.Protocol}`), ev.join(','));
  assert.equal(port.take().at(-1)!.op, VsockOp.Rst);
});

test('clean close: client FIN → SHUTDOWN(SEND); guest SHUTDOWN → FIN upstream; final ack → RST to the guest', () => {
  const { port, ep, up, hostPort } = setup();
  ep.data(7, 0, Buffer.from('PING\r\n'));
  ep.fin(7, 6);
  const p = port.take();
  assert.deepEqual(p.map((x) => [x.op, x.flags]), [[VsockOp.Rw, 0], [VsockOp.Shutdown, 2]]);
  assert.deepEqual(up.take(), ['ack 7 6', 'ack 7 7']);
  port.guest(fromGuest(VsockOp.Rw, hostPort, '+PONG\r\n', { fwdCnt: 6 }));
  port.guest(fromGuest(VsockOp.Shutdown, hostPort, '', { flags: 3, fwdCnt: 6 }));
  assert.deepEqual(up.take(), ['data 7 0 7', 'fin 7 7']);
  ep.ack(7, 8);
  assert.deepEqual(port.take().map((x) => x.op), [VsockOp.Rst]);
  assert.deepEqual(up.take(), ['closed 7']);
  assert.equal(ep.connectionCount, 0);
});

test('frozen state travels: undelivered packets first, then the stream resumes from the gateway offset', () => {
  const { port, ep, up, hostPort } = setup();
  ep.data(7, 0, Buffer.from('abcdef'));
  up.take();
  port.guest(fromGuest(VsockOp.Rw, hostPort, 'xyz'));
  up.take();
  // Paused: the RW with 'abcdef' is still in the ring (the guest has not taken it).
  ep.freeze();
  port.guest(fromGuest(VsockOp.Rw, hostPort, '123')); // flushed from the guest ring during the pause
  assert.deepEqual(up.take(), [], 'nothing is told while frozen');
  const state = ep.saveState();
  ep.dispose();

  const { port: port2, ep: ep2, up: up2, undelivered } = arrive(state);
  assert.deepEqual(undelivered.map((x) => [x.op, x.payload]), [[VsockOp.Rw, 'abcdef']]);
  const c = [...ep2.connections()][0]!;
  assert.equal(c.inQ.endSeq, 6);
  assert.equal(c.outQ.endSeq, 6);
  // The gateway had 'xyz' (3 bytes): only '123' is sent again.
  ep2.resumeConn(7, 3);
  assert.deepEqual(up2.take(), ['opened 7', 'data 7 3 3', 'ack 7 6']);
  assert.equal(up2.out, '123');
  port2.guest(fromGuest(VsockOp.Rw, hostPort, '!'));
  assert.deepEqual(up2.take(), ['data 7 6 1']);
});

test('at the pause, what the guest already sent goes upstream at once; the destination resends only what the gateway lacks', () => {
  for (const gatewayHas of [6, 3]) {
    const { port, ep, up, hostPort } = setup();
    port.guest(fromGuest(VsockOp.Rw, hostPort, 'xyz'));
    assert.deepEqual(up.take(), ['data 7 0 3']);
    // Still in the guest→host ring when the vCPU stops: freeze() flushes it from the device.
    const pending = [fromGuest(VsockOp.Rw, hostPort, '123')];
    port.flushFromGuest = () => {
      for (const p of pending.splice(0)) port.guest(p);
    };
    ep.freeze();
    assert.deepEqual(up.take(), ['data 7 3 3'], 'sent before the downtime, not after it');
    assert.equal(up.out, 'xyz123');
    port.guest(fromGuest(VsockOp.Rw, hostPort, 'late'));
    assert.deepEqual(up.take(), [], 'nothing is told once frozen');
    const state = ep.saveState();
    ep.dispose();

    const { ep: ep2, up: up2 } = arrive(state);
    // The gateway says how much it has: all six bytes, or only the first three (the last frame
    // from the old host was lost with its link).
    ep2.resumeConn(7, gatewayHas);
    assert.equal(up2.out, gatewayHas === 6 ? 'late' : '123late', `gateway had ${gatewayHas}`);
  }
});

test('a failed migration thaws: held packets go back to the guest, nothing lost', () => {
  const { port, ep, up, hostPort } = setup();
  ep.data(7, 0, Buffer.from('abc'));
  ep.freeze();
  assert.equal(port.ring.length, 0, 'taken back from the ring');
  port.guest(fromGuest(VsockOp.Rw, hostPort, 'q'));
  up.take();
  ep.thaw();
  assert.deepEqual(port.take().map((x) => x.payload), ['abc']);
  assert.deepEqual(up.take(), ['data 7 0 1']);
});

test('malformed guest packets are dropped or reset, never thrown', () => {
  const { port, ep, up, hostPort } = setup();
  const before = ep.stats.dropped;
  port.guest(new Uint8Array(10));
  const badLen = fromGuest(VsockOp.Rw, hostPort, 'abc');
  badLen[24] = 99;
  port.guest(badLen);
  port.guest(fromGuest(VsockOp.Rw, hostPort, 'abc', { srcCid: 9 }));
  port.guest(fromGuest(VsockOp.Response, hostPort, 'payload'));
  assert.equal(ep.stats.dropped, before + 4);
  // A packet for no connection is answered with RST.
  port.guest(fromGuest(VsockOp.Rw, 1234, 'zz', { guestPort: 5 }));
  const rst = port.take();
  assert.deepEqual(rst.map((x) => [x.op, x.srcPort, x.dstPort]), [[VsockOp.Rst, 1234, 5]]);
  // A guest connecting to the host is refused.
  port.guest(fromGuest(VsockOp.Request, 22, '', { guestPort: 1000 }));
  assert.equal(port.take()[0]!.op, VsockOp.Rst);
  assert.equal(ep.connectionCount, 1);
  assert.deepEqual(up.take(), []);
  // Seeded garbage.
  let seed = 99;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 16;
  for (let i = 0; i < 3000; i++) {
    const p = fromGuest((rnd() % 9) as VsockOp, rnd() % 2 === 0 ? hostPort : rnd(), 'g'.repeat(rnd() % 50), { flags: rnd() % 4, bufAlloc: rnd(), fwdCnt: rnd() });
    if (rnd() % 4 === 0) p[rnd() % p.length] = rnd() & 0xff;
    port.guest(p);
    if (rnd() % 7 === 0) ep.data(7, rnd() % 100, Buffer.from('d'));
    if (ep.connectionCount < 1) ep.open(7 + i, 6379);
  }
  assert.ok(ep.stats.packetsIn > 3000);
});

test('a guest RST after its data ends the client stream gracefully; a client reset RSTs the guest', () => {
  const { port, ep, up, hostPort } = setup();
  port.guest(fromGuest(VsockOp.Rw, hostPort, 'bye'));
  port.guest(fromGuest(VsockOp.Rst, hostPort));
  assert.deepEqual(up.take(), ['data 7 0 3', 'fin 7 3']);
  // The gateway wrote it all and the FIN: the connection is gone, and no RST answers the guest's RST.
  ep.ack(7, 4);
  assert.deepEqual(up.take(), ['closed 7']);
  assert.deepEqual(port.take(), []);
  // Bytes for a connection the host no longer has are refused.
  ep.data(7, 0, Buffer.from('late'));
  assert.deepEqual(up.take(), [`reset 7 ${ResetReason.Unknown}`]);

  ep.open(8, 6379);
  const [req] = port.take();
  port.guest(fromGuest(VsockOp.Response, req!.srcPort));
  up.take();
  ep.reset(8);
  assert.deepEqual(port.take().map((p) => p.op), [VsockOp.Rst]);
  assert.deepEqual(up.take(), ['closed 8']);
  assert.equal(ep.connectionCount, 0);
});

test('endpoint state refuses a damaged blob with a clear error', async () => {
  const { ep } = setup();
  ep.freeze();
  const s = ep.saveState();
  const { decodeEndpointState } = await import('../../src/net/vsock-endpoint.js');
  assert.equal(decodeEndpointState(s).conns.length, 1);
  assert.throws(() => decodeEndpointState(s.subarray(0, s.length - 1)), /truncated/);
  const v2 = s.slice();
  v2[0] = 9;
  assert.throws(() => decodeEndpointState(v2), /version 9/);
  assert.throws(() => decodeEndpointState(Uint8Array.from([...s, 0])), /trailing/);
});

test('a local connection (openLocal) has its own upstream, is not the gateway\'s, and a freeze resets it', () => {
  const { port, ep, up, hostPort } = setup();
  const mine = new Recorder();
  const id = ep.openLocal(1235, mine)!;
  assert.ok(id < 0, 'local ids are apart from the gateway\'s');
  const [req] = port.take();
  assert.equal(req!.op, VsockOp.Request);
  assert.equal(req!.dstPort, 1235);
  assert.notEqual(req!.srcPort, hostPort);
  port.guest(fromGuest(VsockOp.Response, req!.srcPort, '', { guestPort: 1235 }));
  port.guest(fromGuest(VsockOp.Rw, req!.srcPort, 'table', { guestPort: 1235 }));
  assert.deepEqual(mine.take(), [`opened ${id}`, `data ${id} 0 5`]);
  assert.deepEqual(up.take(), [], 'the gateway hears nothing of it');
  assert.equal(ep.connectionCount, 1, 'only the gateway connection counts');
  assert.deepEqual([...ep.connections()].map((c) => c.connId), [7]);
  ep.resetAll(); // the gateway link is gone: its connections only
  assert.deepEqual(mine.take(), []);
  assert.deepEqual(up.take(), [`reset 7 ${ResetReason.VmGone}`, 'closed 7']);
  port.take();
  ep.freeze();
  assert.deepEqual(mine.take(), [`reset ${id} ${ResetReason.VmGone}`, `closed ${id}`]);
  const rst = port.take().filter((p) => p.dstPort === 1235);
  assert.equal(rst.length, 0, 'taken back into the backlog: it travels with the VM');
  const state = ep.saveState();
  const ep2 = new VsockEndpoint(new HandPort(), silentLogger, 'vm2');
  ep2.restoreState(state);
  assert.equal([...ep2.connections()].length, 0, 'a local connection never migrates');
});

test('traffic samples: the first client bytes of the latest connection per guest port, bounded; never a local connection\'s', () => {
  const { port, ep } = setup();
  assert.deepEqual(ep.trafficSamples().map((s) => [s.vmPort, s.bytes.length]), [[6379, 0]], 'a port is known from its first connection');
  port.guest(fromGuest(VsockOp.CreditUpdate, 49152, '', { bufAlloc: 1 << 20 }));
  ep.data(7, 0, Buffer.from('*1\r\n$4\r\nPING\r\n'));
  ep.data(7, 14, Buffer.from('*1\r\n$4\r\nINFO\r\n'));
  const text = (): [number, string][] => ep.trafficSamples().map((s) => [s.vmPort, Buffer.from(s.bytes).toString('latin1')]);
  assert.deepEqual(text(), [[6379, '*1\r\n$4\r\nPING\r\n']], 'only the first bytes of a connection');
  // A later connection to the same port replaces it; a long first write is cut at 512 bytes.
  ep.open(8, 6379);
  ep.data(8, 0, Buffer.alloc(600, 0x47));
  assert.deepEqual(ep.trafficSamples().map((s) => [s.vmPort, s.bytes.length]), [[6379, 512]]);
  // The sample is a copy: the caller's buffer may change.
  const buf = Buffer.from('GET / HTTP/1.1\r\n\r\n');
  ep.open(9, 8080);
  ep.data(9, 0, buf);
  buf.fill(0);
  assert.deepEqual(text()[1], [8080, 'GET / HTTP/1.1\r\n\r\n']);
  // This host's own connections (openLocal) are not clients: no sample.
  ep.openLocal(1235, new Recorder());
  assert.deepEqual(ep.trafficSamples().map((s) => s.vmPort), [6379, 8080]);
  // At most 16 ports: the oldest goes.
  for (let p = 1; p <= 16; p++) ep.open(100 + p, 20000 + p);
  const ports = ep.trafficSamples().map((s) => s.vmPort);
  assert.equal(ports.length, 16);
  assert.ok(!ports.includes(6379) && !ports.includes(8080) && ports.includes(20016));
  // Samples a VM arrives with fill in ports it has none of its own for.
  const fresh = new VsockEndpoint(new HandPort(), silentLogger, 'vm2');
  fresh.adoptSamples([{ vmPort: 6379, bytes: Buffer.from('PING\r\n') }, { vmPort: 7777, bytes: new Uint8Array(0) }]);
  assert.deepEqual(fresh.trafficSamples().map((s) => [s.vmPort, Buffer.from(s.bytes).toString()]), [[6379, 'PING\r\n'], [7777, '']]);
  fresh.adoptSamples([{ vmPort: 6379, bytes: Buffer.from('other') }]);
  assert.equal(Buffer.from(fresh.trafficSamples()[0]!.bytes).toString(), 'PING\r\n', 'its own sample stays');
});
