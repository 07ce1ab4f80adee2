// The guest services with real clients from Debian's packages (redis-cli, redis-benchmark, curl,
// wrk) through a minimal TCP <-> vsock relay into an in-process machine (tern's vsock device).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { test } from 'node:test';
import { TcpRelay } from './tcp-relay.js';
import { VsockGuest } from './vsock-harness.js';

interface Ran { code: number | null; stdout: string; stderr: string }

/** Runs a client with a timeout (killed by PID through execFile's timeout). */
function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function withGuest(image: string, args: string, port: number, body: (tcpPort: number, relay: TcpRelay) => Promise<void>): Promise<void> {
  const g = new VsockGuest(image, args);
  const relay = new TcpRelay(g, port);
  const tcpPort = await relay.start();
  try {
    await body(tcpPort, relay);
    assert.deepEqual(relay.errors, []);
    assert.doesNotMatch(g.console, /unexpected trap/);
  } finally {
    await relay.stop();
  }
}

test('kv with redis-cli and redis-benchmark (20 clients, then pipelined)', { timeout: 600_000 }, async (t) => {
  await withGuest('kv', 'port=6379', 6379, async (p) => {
    const cli = (...a: string[]): Promise<Ran> => run('redis-cli', ['-p', String(p), ...a]);
    assert.equal((await cli('PING')).stdout, 'PONG\n');
    assert.equal((await cli('SET', 'greeting', 'hello world')).stdout, 'OK\n');
    assert.equal((await cli('GET', 'greeting')).stdout, 'hello world\n');
    assert.equal((await cli('INCRBY', 'n', '5')).stdout, '5\n');
    const bench = await run('redis-benchmark', ['-p', String(p), '-t', 'set,get', '-n', '2000', '-c', '20', '-q']);
    assert.equal(bench.code, 0, bench.stderr + bench.stdout);
    assert.match(bench.stdout, /SET: [\d.]+ requests per second/);
    assert.match(bench.stdout, /GET: [\d.]+ requests per second/);
    const piped = await run('redis-benchmark', ['-p', String(p), '-t', 'set,get', '-n', '4000', '-c', '4', '-P', '16', '-q']);
    assert.equal(piped.code, 0, piped.stderr + piped.stdout);
    assert.match(piped.stdout, /GET: [\d.]+ requests per second/);
    t.diagnostic(`redis-benchmark -c 20: ${bench.stdout.trim().replace(/\s+/g, ' ')}; -P 16: ${piped.stdout.trim().replace(/\s+/g, ' ')}`);
    assert.equal((await cli('EXISTS', 'key:__rand_int__')).stdout, '1\n');
    assert.equal((await cli('GET', 'greeting')).stdout, 'hello world\n');
  });
});

test('http with curl and wrk (keep-alive, 16 connections)', { timeout: 600_000 }, async (t) => {
  await withGuest('http', 'port=80', 80, async (p) => {
    const url = `http://127.0.0.1:${p}`;
    const root = await run('curl', ['-s', '-i', `${url}/`]);
    assert.equal(root.code, 0, root.stderr);
    assert.match(root.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(root.stdout, /Hello from a tern guest/);
    const two = await run('curl', ['-s', `${url}/count`, `${url}/count`]);   // one connection, reused
    assert.equal(two.stdout, '1\n2\n');
    const missing = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${url}/missing`]);
    assert.equal(missing.stdout, '404');
    const wrk = await run('wrk', ['-t', '2', '-c', '16', '-d', '3s', `${url}/count`]);
    assert.equal(wrk.code, 0, wrk.stderr);
    assert.match(wrk.stdout, /Requests\/sec:\s+[\d.]+/);
    assert.doesNotMatch(wrk.stdout, /Socket errors|Non-2xx/);
    t.diagnostic(`wrk -c 16: ${/Requests\/sec:\s+([\d.]+)/.exec(wrk.stdout)?.[1]} requests/s`);
    const after = await run('curl', ['-s', `${url}/count`]);
    assert.ok(Number(after.stdout) > 3, `counter ${after.stdout}`);
  });
});

test('tick over TCP: consecutive sequence numbers, about 20 per second', { timeout: 120_000 }, async () => {
  await withGuest('tick', 'port=7777', 7777, async (p) => {
    const text = await new Promise<string>((resolve, reject) => {
      let buf = '';
      const s = connect(p, '127.0.0.1');
      s.on('data', (d: Buffer) => (buf += d.toString('latin1')));
      s.on('error', reject);
      setTimeout(() => { s.destroy(); resolve(buf); }, 2000);
    });
    const lines = text.split('\n').slice(0, -1);     // the last piece may be half a line
    assert.ok(lines.length >= 10, `${lines.length} lines in 2 s of wall time`);
    const seqs = lines.map((l) => Number(/^tick (\d+) \d+$/.exec(l)?.[1]));
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1]! + 1);
  });
});
