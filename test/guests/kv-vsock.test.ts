// The guest's vsock driver and socket layer, with the kv app on top, driven through tern's real
// virtio-vsock device in an in-process Machine; the host side is played with hand-built packets
// and the guest's answers are checked byte for byte.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VsockOp, VsockShutdown, VsockType, encodeVsockPacket } from '../../src/machine/devices/virtio/vsock-packet.js';
import { GUEST_CID, HOST_CID, HostConn, VsockGuest } from './vsock-harness.js';

const BUF = 32768;   // kv's default buf=: the guest's buf_alloc per connection

function boot(args = 'port=6379'): VsockGuest {
  const g = new VsockGuest('kv', args);
  g.run();
  assert.match(g.console, /kv: listening on vsock port 6379 \(cid 3\), 128 connections\n/);
  return g;
}

test('REQUEST is answered with RESPONSE; PING gets +PONG in one RW, every header field exact', () => {
  const g = boot();
  const c = new HostConn(g, 1234, 6379);
  const resp = c.connect();
  assert.equal(resp.length, 1);
  assert.deepEqual(resp[0]!.h, { srcCid: GUEST_CID, dstCid: HOST_CID, srcPort: 6379, dstPort: 1234, len: 0, type: VsockType.Stream, op: VsockOp.Response, flags: 0, bufAlloc: BUF, fwdCnt: 0 });
  c.write('*1\r\n$4\r\nPING\r\n');
  g.run();
  const rw = c.mine();
  assert.equal(rw.length, 1);
  assert.deepEqual(rw[0]!.h, { srcCid: GUEST_CID, dstCid: HOST_CID, srcPort: 6379, dstPort: 1234, len: 7, type: VsockType.Stream, op: VsockOp.Rw, flags: 0, bufAlloc: BUF, fwdCnt: 14 });
  assert.equal(Buffer.from(rw[0]!.payload).toString('latin1'), '+PONG\r\n');
});

test('commands: SET/GET/DEL/EXISTS/INCR/MGET/MSET/DBSIZE/FLUSHALL/CONFIG/INFO/errors', () => {
  const g = boot();
  const c = new HostConn(g, 1, 6379);
  c.connect();
  const r = (cmd: string[]): string => c.request(`*${cmd.length}\r\n` + cmd.map((a) => `$${Buffer.byteLength(a, 'latin1')}\r\n${a}\r\n`).join(''));
  assert.equal(r(['SET', 'k', 'hello']), '+OK\r\n');
  assert.equal(r(['GET', 'k']), '$5\r\nhello\r\n');
  assert.equal(r(['GET', 'nope']), '$-1\r\n');
  assert.equal(r(['ECHO', 'a\r\nb']), '$4\r\na\r\nb\r\n');
  assert.equal(r(['EXISTS', 'k', 'nope', 'k']), ':2\r\n');
  assert.equal(r(['INCR', 'n']), ':1\r\n');
  assert.equal(r(['INCRBY', 'n', '41']), ':42\r\n');
  assert.equal(r(['DECR', 'n']), ':41\r\n');
  assert.equal(r(['INCR', 'k']), '-ERR value is not an integer or out of range\r\n');
  assert.equal(r(['MSET', 'a', '1', 'b', '22']), '+OK\r\n');
  assert.equal(r(['MGET', 'a', 'x', 'b']), '*3\r\n$1\r\n1\r\n$-1\r\n$2\r\n22\r\n');
  assert.equal(r(['DBSIZE']), ':4\r\n');
  assert.equal(r(['DEL', 'a', 'b', 'zz']), ':2\r\n');
  assert.equal(r(['CONFIG', 'GET', 'save']), '*0\r\n');
  assert.match(r(['INFO']), /^\$\d+\r\n# Server\r\nredis_version:/);
  assert.equal(r(['GET']), "-ERR wrong number of arguments for 'GET' command\r\n");
  assert.equal(r(['NOSUCH', 'x']), "-ERR unknown command 'NOSUCH'\r\n");
  assert.equal(r(['FLUSHALL']), '+OK\r\n');
  assert.equal(r(['DBSIZE']), ':0\r\n');
  assert.equal(c.request('PING\r\n'), '+PONG\r\n', 'inline command');
});

test('SET PX/EX expire in guest time', () => {
  const g = boot();
  const c = new HostConn(g, 2, 6379);
  c.connect();
  assert.equal(c.request('*5\r\n$3\r\nSET\r\n$1\r\nt\r\n$1\r\nv\r\n$2\r\nPX\r\n$3\r\n200\r\n'), '+OK\r\n');
  assert.equal(c.request('*5\r\n$3\r\nSET\r\n$1\r\ns\r\n$1\r\nw\r\n$2\r\nEX\r\n$1\r\n5\r\n'), '+OK\r\n');
  assert.equal(c.request('*2\r\n$3\r\nGET\r\n$1\r\nt\r\n'), '$1\r\nv\r\n');
  g.run(50_000_000, 300);           // 300 ms of guest time
  assert.equal(c.request('*2\r\n$3\r\nGET\r\n$1\r\nt\r\n'), '$-1\r\n');
  assert.equal(c.request('*2\r\n$3\r\nGET\r\n$1\r\ns\r\n'), '$1\r\nw\r\n');
});

test('pipelining, and a request split across packets at every byte', () => {
  const g = boot();
  const c = new HostConn(g, 3, 6379);
  c.connect();
  const one = '*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n';
  assert.equal(c.request(one.repeat(50)), '+OK\r\n$5\r\nvalue\r\n'.repeat(50));
  for (let cut = 1; cut < one.length; cut += 3) {
    c.write(one.slice(0, cut));
    g.run();
    c.write(one.slice(cut));
    g.run();
    c.mine();
    assert.equal(c.received, '+OK\r\n$5\r\nvalue\r\n', `cut at ${cut}`);
    c.received = '';
  }
});

test('a 12 KB value round-trips: split over several 4 KiB packets each way', () => {
  const g = boot();
  const c = new HostConn(g, 12, 6379);
  c.connect();
  const v = Array.from({ length: 12000 }, (_, i) => String.fromCharCode(33 + ((i * 7) % 90))).join('');
  const req = `*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$12000\r\n${v}\r\n`;
  for (let i = 0; i < req.length; i += 4096) c.write(req.slice(i, i + 4096));
  g.run();
  c.mine();
  assert.equal(c.received, '+OK\r\n');
  c.received = '';
  c.write('*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n');
  g.run();
  const rw = c.mine().filter((p) => p.h.op === VsockOp.Rw);
  assert.ok(rw.length >= 3 && rw.every((p) => p.payload.length <= 4096), `${rw.length} packets`);
  assert.equal(c.received, `$12000\r\n${v}\r\n`);
});

test('the guest sends no more than the host credit allows, and goes on after CREDIT_UPDATE', () => {
  const g = boot();
  const c = new HostConn(g, 4, 6379, 16);   // the host has room for 16 bytes
  c.connect();
  const value = 'x'.repeat(100);
  c.write(`*2\r\n$4\r\nECHO\r\n$100\r\n${value}\r\n`);
  const want = `$100\r\n${value}\r\n`;
  for (let rounds = 0; rounds < 20 && c.received.length < want.length; rounds++) {
    g.run();
    const ps = c.mine();
    const sent = ps.filter((p) => p.h.op === VsockOp.Rw).reduce((n, p) => n + p.payload.length, 0);
    assert.ok(sent <= 16, `at most the credit per round: ${sent}`);
    g.send(c.hdr(VsockOp.CreditUpdate));   // the host consumed everything
  }
  assert.equal(c.received, want);
});

test('CREDIT_REQUEST gets a CREDIT_UPDATE with the guest\'s fwd_cnt', () => {
  const g = boot();
  const c = new HostConn(g, 5, 6379);
  c.connect();
  assert.equal(c.request('PING\r\n'), '+PONG\r\n');
  g.send(c.hdr(VsockOp.CreditRequest));
  g.run();
  const ps = c.mine();
  const up = ps.find((p) => p.h.op === VsockOp.CreditUpdate);
  assert.ok(up, `got ${ps.map((p) => p.h.op).join(',')}`);
  assert.equal(up.h.fwdCnt, 6);
  assert.equal(up.h.bufAlloc, BUF);
});

test('no listener: RST; unknown connection: RST; malformed packets: dropped, the guest keeps serving', () => {
  const g = boot();
  g.send({ op: VsockOp.Request, srcPort: 9, dstPort: 81 });
  g.run();
  const rst = g.take();
  assert.equal(rst.length, 1);
  assert.equal(rst[0]!.h.op, VsockOp.Rst);
  assert.equal(rst[0]!.h.dstPort, 9);
  assert.equal(rst[0]!.h.srcPort, 81);
  g.send({ op: VsockOp.Rw, srcPort: 77, dstPort: 6379 }, 'PING\r\n');   // never connected
  g.run();
  assert.deepEqual(g.take().map((p) => p.h.op), [VsockOp.Rst]);

  const c = new HostConn(g, 6, 6379);
  c.connect();
  const good = encodeVsockPacket({ srcCid: HOST_CID, dstCid: GUEST_CID, srcPort: 6, dstPort: 6379, type: VsockType.Stream, op: VsockOp.Rw, flags: 0, bufAlloc: 1 << 18, fwdCnt: 0 }, Buffer.from('PING\r\n'));
  const bad: Uint8Array[] = [];
  bad.push(good.slice(0, 20));                                  // shorter than a header
  const lying = good.slice(); lying[24] = 200; bad.push(lying);  // len beyond the packet
  const huge = good.slice(); huge[27] = 0x80; bad.push(huge);    // len 2^31+6
  const wrongCid = good.slice(); wrongCid[8] = 9; bad.push(wrongCid);
  const seq = good.slice(); seq[28] = 2; bad.push(seq);          // SEQPACKET
  const unknownOp = good.slice(0, 44); unknownOp[24] = 0; unknownOp[30] = 99; bad.push(unknownOp);
  for (const b of bad) g.sendRaw(b);
  g.run();
  g.take();
  c.received = '';
  // the unknown op reset connection 6; a new connection still works
  const d = new HostConn(g, 7, 6379);
  d.connect();
  assert.equal(d.request('*1\r\n$4\r\nPING\r\n'), '+PONG\r\n');
  assert.doesNotMatch(g.console, /unexpected trap/);
});

test('a peer that sends beyond the credit it was given is reset', () => {
  const g = boot('port=6379 buf=4K');
  const c = new HostConn(g, 8, 6379);
  c.connect();
  c.write('x'.repeat(4000));   // fits (4096), but is no complete request...
  c.write('y'.repeat(4000));   // ...kv only reads into its 16 KiB buffer, so this still fits
  g.run();
  c.mine();
  for (let i = 0; i < 4; i++) c.write('z'.repeat(4096));
  g.run();
  const ops = c.mine().map((p) => p.h.op);
  assert.ok(ops.includes(VsockOp.Rst), `ops ${ops.join(',')}`);
});

test('SHUTDOWN from the host: the guest ends the connection with RST; QUIT: the guest shuts down first', () => {
  const g = boot();
  const c = new HostConn(g, 10, 6379);
  c.connect();
  assert.equal(c.request('PING\r\n'), '+PONG\r\n');
  g.send(c.hdr(VsockOp.Shutdown, VsockShutdown.Rcv | VsockShutdown.Send));
  g.run();
  assert.deepEqual(c.mine().map((p) => p.h.op), [VsockOp.Rst]);

  const d = new HostConn(g, 11, 6379);
  d.connect();
  d.write('QUIT\r\n');
  g.run();
  const ps = d.mine();
  assert.equal(d.received, '+OK\r\n');
  assert.deepEqual(ps.map((p) => [p.h.op, p.h.flags]), [[VsockOp.Rw, 0], [VsockOp.Shutdown, 3]]);
  g.send(d.hdr(VsockOp.Rst));
  g.run();
  assert.deepEqual(d.mine(), []);
  // the slot is free again: same ports connect anew
  const e = new HostConn(g, 11, 6379);
  assert.deepEqual(e.connect().map((p) => p.h.op), [VsockOp.Response]);
  assert.equal(e.request('PING\r\n'), '+PONG\r\n');
});

test('100 connections at once, each with its own key', () => {
  const g = boot();
  const cs: HostConn[] = [];
  for (let i = 0; i < 100; i++) {
    const c = new HostConn(g, 20000 + i, 6379);
    g.send(c.hdr(VsockOp.Request));
    cs.push(c);
  }
  g.run();
  for (const c of cs) assert.deepEqual(c.mine().map((p) => p.h.op), [VsockOp.Response]);
  for (const [i, c] of cs.entries()) c.write(`*3\r\n$3\r\nSET\r\n$${String(i).length}\r\n${i}\r\n$5\r\nv${String(i).padStart(4, '0')}\r\n`);
  g.run();
  for (const c of cs) { c.mine(); assert.equal(c.received, '+OK\r\n'); c.received = ''; }
  for (const [i, c] of cs.entries()) c.write(`*2\r\n$3\r\nGET\r\n$${String(i).length}\r\n${i}\r\n`);
  g.run();
  for (const [i, c] of cs.entries()) { c.mine(); assert.equal(c.received, `$5\r\nv${String(i).padStart(4, '0')}\r\n`); }
});

test('connection state lives in guest RAM: a snapshot restored into a new machine carries on', () => {
  const g = boot();
  const c = new HostConn(g, 30, 6379);
  c.connect();
  assert.equal(c.request('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n'), '+OK\r\n');
  c.write('*2\r\n$3\r\nGET\r\n$1\r\nk\r\n');     // in flight: not yet seen by the guest
  const state = g.m.saveState();
  const g2 = new VsockGuest('kv', 'port=6379');
  g2.m.ram.u8.set(g.m.ram.u8);
  g2.m.restoreState(state);
  const pending = g.m.vsock!.toGuest;
  for (let p = pending.shift(); p !== undefined; p = pending.shift()) g2.sendRaw(p);
  const c2 = new HostConn(g2, 30, 6379);
  c2.fwdCnt = c.fwdCnt;
  g2.run();
  c2.mine();
  assert.equal(c2.received, '$2\r\nv1\r\n');
  c2.received = '';
  assert.equal(c2.request('PING\r\n'), '+PONG\r\n');
});

test('fuzz: 3000 random packets (random fields, lengths, ops, CIDs) never trap the guest', () => {
  const g = boot();
  let seed = 0x2545f491;
  const rnd = (n: number): number => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const c = new HostConn(g, 60, 6379);
  c.connect();
  for (let round = 0; round < 30; round++) {
    for (let i = 0; i < 100; i++) {
      const len = rnd(4) === 0 ? rnd(44) : 44 + rnd(600);
      const p = new Uint8Array(len);
      for (let k = 0; k < len; k++) p[k] = rnd(256);
      const dv = new DataView(p.buffer);
      if (len >= 44 && rnd(3) > 0) {
        // plausible headers: right CIDs, a known port pair, a real op, a len that may lie
        dv.setUint32(0, HOST_CID, true); dv.setUint32(4, 0, true);
        dv.setUint32(8, GUEST_CID, true); dv.setUint32(12, 0, true);
        dv.setUint32(16, [60, 61, 62, rnd(70000)][rnd(4)]!, true);
        dv.setUint32(20, rnd(2) ? 6379 : rnd(65536), true);
        dv.setUint32(24, rnd(2) ? len - 44 : rnd(2 ** 31), true);
        dv.setUint16(28, rnd(4) ? VsockType.Stream : rnd(4), true);
        dv.setUint16(30, rnd(9), true);
      }
      g.sendRaw(p);
    }
    g.run();
    g.take();
  }
  assert.doesNotMatch(g.console, /unexpected trap/);
  const d = new HostConn(g, 99, 6379);
  assert.deepEqual(d.connect().map((p) => p.h.op), [VsockOp.Response]);
  assert.equal(d.request('*1\r\n$4\r\nPING\r\n'), '+PONG\r\n');
});

test('DEL-heavy use: the table reuses its tombstones instead of growing', () => {
  const g = boot();
  const c = new HostConn(g, 70, 6379);
  c.connect();
  let req = '';
  for (let i = 0; i < 3000; i++) req += `*3\r\n$3\r\nSET\r\n$${String(i).length}\r\n${i}\r\n$1\r\nx\r\n*2\r\n$3\r\nDEL\r\n$${String(i).length}\r\n${i}\r\n`;
  for (let i = 0; i < req.length; i += 4000) {
    c.write(req.slice(i, i + 4000));
    g.run();
    c.mine();
  }
  assert.equal(c.received, '+OK\r\n:1\r\n'.repeat(3000));
  c.received = '';
  assert.equal(c.request('DBSIZE\r\n'), ':0\r\n');
  assert.match(c.request('INFO\r\n'), /\r\ntable_slots:1024\r\n/);
});

test('a closed connection whose peer never gives credit nor answers is reset after its timeouts', () => {
  const g = boot();
  const c = new HostConn(g, 80, 6379, 4);      // room for 4 bytes only
  c.connect();
  c.write('QUIT\r\n');                         // +OK\r\n (5 bytes) then close
  g.run();
  c.mine();
  assert.equal(c.received, '+OK\r');
  g.run(50_000_000, 11_000);                    // no credit for 11 s of guest time
  const ops = c.mine().map((p) => p.h.op);
  assert.ok(ops.includes(VsockOp.Rst), `ops ${ops.join(',')}`);
  const d = new HostConn(g, 80, 6379);          // the slot and the port pair are free again
  assert.deepEqual(d.connect().map((p) => p.h.op), [VsockOp.Response]);
});

test('kv balloon=self: memory freed by FLUSHALL goes to the balloon, and comes back for new keys', () => {
  const g = new VsockGuest('kv', 'port=6379 balloon=self balloon-period=100ms balloon-reserve=256K', 64,
    [{ kind: 'virtio-vsock', guestCid: GUEST_CID }, { kind: 'virtio-balloon' }]);
  g.run(100_000_000, 300);
  const idle = g.m.ram.discarded.count();
  assert.ok(idle > 8000, `free memory ballooned at start: ${idle} pages`);
  const c = new HostConn(g, 90, 6379);
  c.connect();
  const v = 'v'.repeat(3000);
  const set = (i: number): string => `*3\r\n$3\r\nSET\r\n$${String(i).length}\r\n${i}\r\n$3000\r\n${v}\r\n`;
  for (let i = 0; i < 3000; i += 4) {          // ~ 12 MiB of values (one 4 KiB block each)
    c.write(set(i) + set(i + 1) + set(i + 2) + set(i + 3));
    g.run();
    c.mine();
  }
  assert.equal(c.received, '+OK\r\n'.repeat(3000));
  c.received = '';
  const full = g.m.ram.discarded.count();
  assert.ok(full < idle - 2500, `the keys took pages back from the balloon: ${idle} -> ${full}`);
  assert.equal(c.request('*2\r\n$3\r\nGET\r\n$4\r\n2999\r\n'), `$3000\r\n${v}\r\n`);
  assert.equal(c.request('FLUSHALL\r\n'), '+OK\r\n');
  g.run(100_000_000, 300);
  const after = g.m.ram.discarded.count();
  assert.ok(after > full + 2500, `freed pages went back to the balloon: ${full} -> ${after}`);
  assert.equal(c.request(set(7)), '+OK\r\n');
  assert.equal(c.request('*2\r\n$3\r\nGET\r\n$1\r\n7\r\n'), `$3000\r\n${v}\r\n`);
});

test('TRANSPORT_RESET on the event queue drops every connection; new ones work', () => {
  const g = boot();
  const c = new HostConn(g, 100, 6379);
  c.connect();
  assert.equal(c.request('PING\r\n'), '+PONG\r\n');
  g.m.vsock!.postEvent(0);
  g.run();
  assert.deepEqual(g.take(), [], 'nothing is sent for connections the transport reset');
  c.write('PING\r\n');                            // the old connection is gone: RST
  g.run();
  assert.deepEqual(c.mine().map((p) => p.h.op), [VsockOp.Rst]);
  const d = new HostConn(g, 100, 6379);
  assert.deepEqual(d.connect().map((p) => p.h.op), [VsockOp.Response]);
  assert.equal(d.request('PING\r\n'), '+PONG\r\n');
});
