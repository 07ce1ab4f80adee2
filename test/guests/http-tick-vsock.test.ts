// The http and tick guest services over tern's virtio-vsock device, host side played by hand.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VsockOp, VsockShutdown } from '../../src/machine/devices/virtio/vsock-packet.js';
import { HostConn, VsockGuest } from './vsock-harness.js';

function http(): VsockGuest {
  const g = new VsockGuest('http', 'port=80');
  g.run();
  assert.match(g.console, /http: listening on vsock port 80 \(cid 3\), 128 connections\n/);
  return g;
}

test('http: static page, counter, 404, keep-alive across requests with exact Content-Length', () => {
  const g = http();
  const c = new HostConn(g, 5000, 80);
  c.connect();
  const root = c.request('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  const [head, body] = root.split('\r\n\r\n') as [string, string];
  assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(head, /\r\nContent-Type: text\/html\r\n/);
  assert.match(head, /\r\nConnection: keep-alive$/);
  const len = Number(/Content-Length: (\d+)/.exec(head)?.[1]);
  assert.equal(Buffer.byteLength(body, 'latin1'), len);
  assert.ok(len > 0);
  assert.match(body, /Hello from a tern guest/);
  assert.equal(c.request('GET /count HTTP/1.1\r\n\r\n'),
    'HTTP/1.1 200 OK\r\nServer: tern-http\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n1\n');
  // pipelined, the second also with a body to skip
  const two = c.request('GET /count HTTP/1.1\r\n\r\nGET /count HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /nope HTTP/1.1\r\n\r\n');
  assert.equal(two.split('HTTP/1.1 ').length - 1, 3);
  assert.match(two, /\r\n\r\n2\n.*\r\n\r\n3\n.*404 Not Found/s);
  assert.match(c.request('HEAD / HTTP/1.1\r\n\r\n'), new RegExp(`^HTTP/1.1 200 OK\\r\\n.*Content-Length: ${len}\\r\\nConnection: keep-alive\\r\\n\\r\\n$`, 's'));
  assert.match(c.request('POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n'), /^HTTP\/1\.1 405 /);
});

test('http: Connection: close and HTTP/1.0 end the connection after the response', () => {
  const g = http();
  const c = new HostConn(g, 5001, 80);
  c.connect();
  c.write('GET /count HTTP/1.1\r\nConnection: close\r\n\r\n');
  g.run();
  const ps = c.mine();
  assert.match(c.received, /Connection: close\r\n\r\n1\n$/);
  assert.deepEqual(ps.map((p) => p.h.op).slice(-1), [VsockOp.Shutdown]);
  g.send(c.hdr(VsockOp.Rst));
  const d = new HostConn(g, 5002, 80);
  d.connect();
  d.write('GET / HTTP/1.0\r\n\r\n');
  g.run();
  assert.deepEqual(d.mine().map((p) => p.h.op).slice(-1), [VsockOp.Shutdown]);
  assert.match(d.received, /^HTTP\/1\.1 200 OK\r\n.*Connection: close\r\n/s);
  const e = new HostConn(g, 5003, 80);
  e.connect();
  assert.match(e.request('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'), /Connection: keep-alive\r\n/);
  assert.match(e.request('garbage\r\n\r\n'), /^HTTP\/1\.1 400 Bad Request\r\n/);
});

test('http: a client that half-closes still gets its response, then the guest closes', () => {
  const g = http();
  const c = new HostConn(g, 5004, 80);
  c.connect();
  c.write('GET /count HTTP/1.1\r\n\r\n');
  g.send(c.hdr(VsockOp.Shutdown, VsockShutdown.Send));
  g.run();
  const ops = c.mine().map((p) => p.h.op);
  assert.match(c.received, /\r\n\r\n1\n$/);
  assert.deepEqual(ops, [VsockOp.Rw, VsockOp.Shutdown]);
});

test('tick: every client gets `tick <seq> <guest-ms>` lines at 20 Hz of guest time', () => {
  const g = new VsockGuest('tick', 'port=7777');
  g.run();
  assert.match(g.console, /tick: listening on vsock port 7777 \(cid 3\), 128 connections\ntick: 20 updates per second\n/);
  const a = new HostConn(g, 1, 7777);
  const b = new HostConn(g, 2, 7777);
  a.connect();
  b.connect();
  g.run(50_000_000, 1000);     // one second of guest time
  a.mine();
  b.mine();
  for (const c of [a, b]) {
    const lines = c.received.trim().split('\n');
    assert.ok(lines.length >= 19 && lines.length <= 21, `${lines.length} lines in 1 s`);
    let prevSeq = -1;
    let prevMs = -1;
    for (const l of lines) {
      const m = /^tick (\d+) (\d+)$/.exec(l);
      assert.ok(m, `line ${JSON.stringify(l)}`);
      const seq = Number(m[1]);
      const ms = Number(m[2]);
      if (prevSeq >= 0) {
        assert.equal(seq, prevSeq + 1);
        assert.ok(ms - prevMs >= 45 && ms - prevMs <= 55, `gap ${ms - prevMs} ms`);
      }
      prevSeq = seq;
      prevMs = ms;
    }
  }
  assert.equal(a.received, b.received, 'both clients see the same updates');
  // a client that leaves is closed; the other keeps getting ticks
  g.send(a.hdr(VsockOp.Shutdown, VsockShutdown.Rcv | VsockShutdown.Send));
  a.received = '';
  b.received = '';
  g.run(50_000_000, 200);
  assert.deepEqual(a.mine().map((p) => p.h.op), [VsockOp.Rst]);
  b.mine();
  assert.ok(b.received.split('\n').length >= 4);
});
