// End to end through real processes: a gateway, host daemons, the kv/http guest images and real
// clients (redis-benchmark, redis-cli, curl, wrk). Connections survive migrations exactly; a
// failed migration leaves them on the source; a restarted gateway keeps its table; a vanished
// host has its clients reset.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { MigrationInfo } from '../../src/host/api-types.js';
import { http, killAll, sleep, startDaemon, tern, ternJson, waitFor, type Daemon } from '../host/helpers.js';
import { ExactStream, background, connectRetry, freePort, killGateways, resp, run, startGateway, type GatewayProc } from './helpers.js';

const IMAGES = fileURLToPath(new URL('../../../guests/images/', import.meta.url));
const KV = join(IMAGES, 'kv.elf');
const HTTP = join(IMAGES, 'http.elf');

let gw: GatewayProc;
let a: Daemon;
let b: Daemon;

before(async () => {
  gw = await startGateway();
  [a, b] = await Promise.all([startDaemon('a'), startDaemon('b')]);
});

after(() => {
  killGateways();
  killAll();
});

async function startVm(host: Daemon, image: string, name: string, expose: string): Promise<void> {
  const r = await tern(['vm', 'start', image, '--host', host.api, '--name', name, '--expose', expose, '--gateway', gw.listen, '--mem', '32M']);
  assert.equal(r.code, 0, r.stderr);
}

async function migrate(name: string, from: Daemon, to: Daemon, extra: string[] = []): Promise<{ status: string; downtimeMs: number }> {
  const r = await ternJson<{ status: string; downtimeMs: number; error?: { message: string } }>(['migrate', name, '--from', from.api, '--to', to.api, ...extra], 120_000);
  assert.equal(r.value.status, 'completed', `migration of ${name}: ${r.value.error?.message ?? r.stderr}`);
  return r.value;
}

async function redisCli(port: number, ...args: string[]): Promise<string> {
  const r = await run('redis-cli', ['-p', String(port), ...args], 20_000);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

test('kv through the gateway: redis-benchmark and an exact pipelined stream across 10 migrations back and forth', { timeout: 600_000 }, async () => {
  const port = await freePort();
  await startVm(a, KV, 'kv1', `${port}:6379`);
  const stream = new ExactStream(await connectRetry(port), 'x');
  await stream.progress(100_000);
  const bench = background('redis-benchmark', ['-p', String(port), '-t', 'set,get', '-n', '100000000', '-c', '10', '-q'], 300_000);
  await sleep(500);
  const downtimes: number[] = [];
  let from = a;
  let to = b;
  for (let m = 0; m < 10; m++) {
    assert.equal(await redisCli(port, 'set', `before${m}`, `value-${m}`), 'OK');
    const r = await migrate('kv1', from, to);
    assert.equal(r.status, 'completed');
    downtimes.push(r.downtimeMs);
    for (let k = 0; k <= m; k++) assert.equal(await redisCli(port, 'get', `before${k}`), `value-${k}`, `key before${k} after migration ${m + 1}`);
    await stream.progress(20_000);
    [from, to] = [to, from];
  }
  await stream.progress(50_000);
  stream.stop();
  bench.kill();
  const res = await bench.done;
  const text = (res.stdout + res.stderr).replaceAll('\r', '\n');
  assert.doesNotMatch(text, /error|reset|refused|closed/i, text.slice(-2000));
  assert.ok(stream.verified > 500_000, `verified ${stream.verified} bytes`);
  const lines = gw.lines().filter((l) => l['event'] === 'vm-moved' && l['vm'] === 'kv1');
  assert.equal(lines.length, 10);
  for (const l of lines) assert.equal(l['lost'], 0);
  await tern(['vm', 'stop', 'kv1', '--host', from.api]);
});

test('destination killed mid-migration: connections stay up on the source', { timeout: 300_000 }, async () => {
  const port = await freePort();
  const c = await startDaemon('c');
  await startVm(a, KV, 'kv2', `${port}:6379`);
  const stream = new ExactStream(await connectRetry(port), 'y');
  await stream.progress(50_000);
  // Slow enough that the kill lands during pre-copy.
  const mig = ternJson<{ status: string }>(['migrate', 'kv2', '--from', a.api, '--to', c.api, '--max-bandwidth', '2Mbit'], 120_000);
  // Kill it once pages flow (not before the migration has even reached it: a slow CLI start
  // would turn this into an unreachable destination).
  const running = await waitFor(async () => {
    const list = (await http(a.api, 'GET', '/v1/migrations')).json<{ migrations: MigrationInfo[] }>().migrations;
    return list.some((m) => m.vm === 'kv2' && m.direction === 'outgoing' && m.progress?.stage === 'precopy');
  }, 30_000, 20);
  assert.ok(running, 'the migration reached pre-copy');
  await sleep(200);
  process.kill(c.pid, 'SIGKILL');
  const r = await mig;
  assert.notEqual(r.value.status, 'completed');
  await stream.progress(100_000);
  assert.equal(await redisCli(port, 'ping'), 'PONG');
  const info = await ternJson<{ host: string; status: string }>(['vm', 'inspect', 'kv2', '--host', a.api]);
  assert.equal(info.value.status, 'running');
  stream.stop();
  await tern(['vm', 'stop', 'kv2', '--host', a.api]);
});

test('a restarted gateway keeps its table: the port listens again and the host relinks', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tern-gw-'));
  const state = join(dir, 'gateway.json');
  const listen = `127.0.0.1:${await freePort()}`;
  const g1 = await startGateway(['--state', state], listen);
  const port = await freePort();
  const r = await tern(['vm', 'start', KV, '--host', a.api, '--name', 'kv3', '--expose', `${port}:6379`, '--gateway', g1.listen, '--mem', '32M']);
  assert.equal(r.code, 0, r.stderr);
  const s = await connectRetry(port);
  const closed = new Promise<string>((res) => {
    s.on('error', (e: NodeJS.ErrnoException) => res(e.code ?? e.message));
    s.on('close', () => res('closed'));
  });
  assert.equal(await redisCli(port, 'set', 'k', 'v'), 'OK');
  await waitFor(() => existsSync(state), 5000);
  const table = JSON.parse(readFileSync(state, 'utf8')) as { version: number; vms: { name: string; exposures: { hostPort: number; vmPort: number }[] }[] };
  assert.equal(table.version, 1);
  assert.deepEqual(table.vms.map((v) => [v.name, v.exposures]), [['kv3', [{ hostPort: port, vmPort: 6379 }]]]);
  process.kill(g1.pid, 'SIGKILL');
  await g1.exited;
  // The client's connection went with the gateway process.
  assert.match(await closed, /ECONNRESET|closed/);
  const g2 = await startGateway(['--state', state], listen);
  // The port is back before the host relinks; the connection waits for the VM.
  const pong = await waitFor(async () => (await run('redis-cli', ['-p', String(port), 'get', 'k'], 15_000)).stdout.trim() === 'v', 15_000, 200);
  assert.ok(pong, 'the key is served through the restarted gateway');
  assert.ok(g2.lines().some((l) => l['event'] === 'vm-attached' && l['vm'] === 'kv3'));
  await tern(['vm', 'stop', 'kv3', '--host', a.api]);
  // Withdrawn: the table forgets it.
  const gone = await waitFor(() => (JSON.parse(readFileSync(state, 'utf8')) as { vms: unknown[] }).vms.length === 0, 5000);
  assert.ok(gone);
  process.kill(g2.pid, 'SIGKILL');
});

test('http guest: curl and wrk through the gateway, with a migration during wrk', { timeout: 180_000 }, async () => {
  const port = await freePort();
  await startVm(a, HTTP, 'web', `${port}:80`);
  await connectRetry(port).then((s) => s.destroy());
  const page = await run('curl', ['-s', '-i', `http://127.0.0.1:${port}/`], 20_000);
  assert.equal(page.code, 0, page.stderr);
  assert.match(page.stdout, /^HTTP\/1\.1 200/);
  const wrk = background('wrk', ['-c', '16', '-t', '2', '-d', '6s', `http://127.0.0.1:${port}/`], 60_000);
  await sleep(2000);
  const m = await migrate('web', a, b);
  assert.equal(m.status, 'completed');
  const res = await wrk.done;
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /Requests\/sec/);
  assert.doesNotMatch(res.stdout, /Socket errors|Non-2xx/, res.stdout);
  const after = await run('curl', ['-s', `http://127.0.0.1:${port}/count`], 20_000);
  assert.equal(after.code, 0);
  await tern(['vm', 'stop', 'web', '--host', b.api]);
});

test('a host that vanishes has its clients reset, not left hanging', { timeout: 120_000 }, async () => {
  const d = await startDaemon('d');
  const port = await freePort();
  await startVm(d, KV, 'kv4', `${port}:6379`);
  const s = await connectRetry(port);
  s.setEncoding('latin1');
  let got = '';
  s.on('data', (x: string) => (got += x));
  s.write(resp('PING'));
  assert.ok(await waitFor(() => got === '+PONG\r\n', 10_000));
  const ended = new Promise<string>((res) => {
    s.on('error', (e: NodeJS.ErrnoException) => res(e.code ?? e.message));
    s.on('close', () => res('closed without error'));
  });
  process.kill(d.pid, 'SIGKILL');
  const how = await Promise.race([ended, sleep(10_000).then(() => 'still open after 10 s')]);
  assert.equal(how, 'ECONNRESET');
  assert.ok(await waitFor(() => gw.lines().some((l) => l['event'] === 'host-lost' && l['host'] === 'd'), 5000));
});

test('bad API input: expose without gateway, a bad port, a duplicate port', async () => {
  const bad = [
    [['--expose', '6379:6379'], /needs --gateway/],
    [['--expose', '70000:1', '--gateway', gw.listen], /outside 1\.\.65535/],
    [['--expose', 'x', '--gateway', gw.listen], /HOSTPORT:VMPORT/],
    [['--expose', '1000:1', '--expose', '1000:2', '--gateway', gw.listen], /given twice/],
    [['--gateway', 'nohostport'], /--gateway/],
  ] as const;
  for (const [args, re] of bad) {
    const r = await tern(['vm', 'start', KV, '--host', a.api, '--name', 'bad', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
});

test('garbage on a link closes that link with an ERROR frame; garbage from a client is just bytes', { timeout: 60_000 }, async () => {
  const [host, portText] = [gw.listen.slice(0, gw.listen.lastIndexOf(':')), gw.listen.slice(gw.listen.lastIndexOf(':') + 1)];
  const { connect } = await import('node:net');
  const raw = connect(Number(portText), host);
  const chunks: Buffer[] = [];
  raw.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise<void>((r) => raw.on('close', () => r()));
  raw.on('error', () => {});
  raw.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await Promise.race([closed, sleep(10_000)]);
  const got = Buffer.concat(chunks);
  assert.ok(got.length >= 5 && got[4] === 14, `an ERROR frame, got ${got.toString('hex').slice(0, 40)}`);
  assert.match(got.subarray(7).toString(), /frame length|HELLO/);
  assert.ok(await waitFor(() => /closed before HELLO.*bad frame|bad frame.*closed before HELLO/.test(gw.stderr()), 5000), gw.stderr());

  // A client sending binary garbage to kv gets whatever kv answers; others are unaffected.
  const port = await freePort();
  await startVm(a, KV, 'kv5', `${port}:6379`);
  const s = await connectRetry(port);
  s.on('error', () => {});
  s.write(Buffer.from(Array.from({ length: 65536 }, (_, i) => (i * 131 + 7) & 0xff)));
  await sleep(500);
  s.destroy();
  assert.equal(await redisCli(port, 'ping'), 'PONG');
  assert.equal(gw.proc.exitCode, null);
  await tern(['vm', 'stop', 'kv5', '--host', a.api]);
});

test('tern gateway serve: clear errors for a port in use and a bad address', async () => {
  const r1 = await tern(['gateway', 'serve', '--listen', gw.listen]);
  assert.equal(r1.code, 1);
  assert.match(r1.stderr, /already in use/);
  const r2 = await tern(['gateway', 'serve', '--listen', 'nohostport']);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /--listen/);
  const help = await tern(['gateway', 'serve', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--state/);
});

test('tern gateway status shows hosts, VMs, their location and exposed ports', { timeout: 60_000 }, async () => {
  const port = await freePort();
  await startVm(a, KV, 'kv6', `${port}:6379`);
  await connectRetry(port).then((s) => s.destroy());
  const st = await ternJson<{ hosts: { host: string }[]; vms: { name: string; host: string | null; epoch: number; exposures: { hostPort: number; vmPort: number }[] }[] }>(['gateway', 'status', '--gateway', gw.listen]);
  assert.equal(st.code, 0, st.stderr);
  assert.ok(st.value.hosts.some((h) => h.host === 'a'));
  const vm = st.value.vms.find((v) => v.name === 'kv6');
  assert.deepEqual(vm, { name: 'kv6', uuid: (vm as { uuid?: string } | undefined)?.uuid, host: 'a', epoch: 0, exposures: [{ hostPort: port, vmPort: 6379 }], connections: 0 });
  const text = await tern(['gateway', 'status', '--gateway', gw.listen]);
  assert.match(text.stdout, new RegExp(`kv6\\s+a\\s+0\\s+${port}:6379`));
  const bad = await tern(['gateway', 'status', '--gateway', a.api]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /gateway/);
  await tern(['vm', 'stop', 'kv6', '--host', a.api]);
});

test('the API checks expose and gateway', async () => {
  const { http } = await import('../host/helpers.js');
  const image = readFileSync(KV).toString('base64');
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ expose: ['6379:6379'] }, /needs 'gateway'/],
    [{ expose: '6379:6379', gateway: gw.listen }, /must be an array/],
    [{ expose: ['6379'], gateway: gw.listen }, /HOSTPORT:VMPORT/],
    [{ expose: ['1:1', '1:2'], gateway: gw.listen }, /given twice/],
    [{ gateway: 'no port here' }, /gateway/],
  ];
  for (const [extra, re] of cases) {
    const r = await http(a.api, 'POST', '/v1/vms', { name: 'apibad', image, imageName: 'kv.elf', memBytes: 32 * 1024 * 1024, ...extra });
    assert.equal(r.status, 400, r.text);
    assert.match(r.json<{ error: { message: string } }>().error.message, re);
  }
});
