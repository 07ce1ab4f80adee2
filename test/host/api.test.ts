// The host daemon's management API and the vm/host CLI, against real `tern host serve` processes.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { HostInfo, VmInfo } from '../../src/host/api-types.js';
import { imagePath } from '../helpers/images.js';
import { count, http, killAll, sleep, startDaemon, tern, ternBackground, ternJson, waitFor, type Daemon } from './helpers.js';

const MiB = 1024 * 1024;
const VERIFY = imagePath('verify');

after(() => killAll());

describe('host daemon API', { timeout: 180_000 }, () => {
  let d: Daemon;
  before(async () => {
    d = await startDaemon('api-host');
  });

  test('GET /v1/host describes the host', async () => {
    const r = await http(d.api, 'GET', '/v1/host');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    const h = r.json<HostInfo>();
    assert.equal(h.name, 'api-host');
    assert.equal(h.api, d.api);
    assert.equal(h.migration, d.migration);
    assert.equal(h.apiVersion, 'v1');
    assert.equal(h.pid, d.pid);
    assert.equal(h.memory.maxBytes, 8 * 1024 * MiB);
    assert.equal(typeof h.version, 'string');
  });

  test('a verify VM through the CLI: start, list, inspect, pause, resume, console, stop', async () => {
    const host = ['--host', d.api];
    const start = await ternJson<VmInfo>(['vm', 'start', VERIFY, ...host, '--name', 'c1', '--mem', '32M', '--append', 'region=4M pace=5ms']);
    assert.equal(start.code, 0, start.stderr);
    assert.equal(start.value.name, 'c1');
    assert.equal(start.value.status, 'running');
    assert.equal(start.value.memBytes, 32 * MiB);
    assert.equal(start.value.bootArgs, 'region=4M pace=5ms');
    assert.equal(start.value.imageName, 'verify.elf');
    assert.match(start.value.imageDigest, /^sha256:[0-9a-f]{64}$/);
    assert.match(start.value.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

    const human = await tern(['vm', 'start', VERIFY, ...host, '--name', 'c2', '--mem', '16M', '--append', 'region=1M pace=5ms']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /Started VM c2 on host api-host/);

    const list = await ternJson<VmInfo[]>(['vm', 'list', ...host]);
    assert.deepEqual(list.value.map((v) => v.name), ['c1', 'c2']);
    const table = await tern(['vm', 'list', ...host]);
    assert.match(table.stdout, /^NAME\s+STATUS\s+MEMORY/);
    assert.match(table.stdout, /c1\s+running\s+32\.0 MiB\s+verify\.elf/);

    const inspect = await tern(['vm', 'inspect', 'c1', ...host]);
    assert.equal(inspect.code, 0);
    assert.match(inspect.stdout, /status:\s+running/);
    assert.match(inspect.stdout, /boot args:\s+region=4M pace=5ms/);

    const paused = await ternJson<VmInfo>(['vm', 'pause', 'c1', ...host]);
    assert.equal(paused.value.status, 'paused');
    const c1 = (await ternJson<VmInfo>(['vm', 'inspect', 'c1', ...host])).value;
    await sleep(200);
    const c1later = (await ternJson<VmInfo>(['vm', 'inspect', 'c1', ...host])).value;
    assert.equal(c1later.status, 'paused');
    assert.equal(c1later.instructions, c1.instructions, 'a paused VM executes nothing');
    assert.equal(c1later.guestTimeMs, c1.guestTimeMs, 'guest time stands still while paused');
    const again = await tern(['vm', 'pause', 'c1', ...host]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already paused/);

    const resumed = await tern(['vm', 'resume', 'c1', ...host]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /VM c1 resumed/);
    const notPaused = await tern(['vm', 'resume', 'c1', ...host]);
    assert.equal(notPaused.code, 1);
    assert.match(notPaused.stderr, /not paused/);

    await waitFor(async () => count((await tern(['vm', 'console', 'c1', ...host])).stdout, 'B') >= 3, 20_000);
    const con = await tern(['vm', 'console', 'c1', ...host]);
    assert.equal(con.code, 0);
    assert.match(con.stdout, /^AB+$/);
    const conJson = await ternJson<{ vm: string; host: string; bytes: number; text: string }>(['vm', 'console', 'c1', ...host]);
    assert.equal(conJson.value.vm, 'c1');
    assert.match(conJson.value.text, /^AB+$/);

    for (const name of ['c1', 'c2']) {
      const stop = await tern(['vm', 'stop', name, ...host]);
      assert.equal(stop.code, 0, stop.stderr);
      assert.match(stop.stdout, new RegExp(`VM ${name} stopped and freed`));
    }
    const empty = await tern(['vm', 'list', ...host]);
    assert.match(empty.stdout, /no VMs on host api-host/);
    const gone = await tern(['vm', 'inspect', 'c1', ...host]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /no VM named 'c1' on host api-host/);
  });

  test('a verify VM through raw HTTP: create, list, inspect, pause, resume, console, delete', async () => {
    const image = readFileSync(VERIFY).toString('base64');
    const created = await http(d.api, 'POST', '/v1/vms', { name: 'h1', image, imageName: 'verify.elf', memBytes: 16 * MiB, bootArgs: 'region=1M pace=5ms' });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.headers.location, '/v1/vms/h1');
    assert.equal(created.json<VmInfo>().status, 'running');
    const list = await http(d.api, 'GET', '/v1/vms');
    assert.deepEqual(list.json<{ vms: VmInfo[] }>().vms.map((v) => v.name), ['h1']);
    assert.equal((await http(d.api, 'GET', '/v1/vms/h1')).json<VmInfo>().memBytes, 16 * MiB);

    assert.equal((await http(d.api, 'POST', '/v1/vms/h1/pause')).json<VmInfo>().status, 'paused');
    const r409 = await http(d.api, 'POST', '/v1/vms/h1/pause', {});
    assert.equal(r409.status, 409);
    assert.equal(r409.json<{ error: { code: string } }>().error.code, 'conflict');
    assert.equal((await http(d.api, 'POST', '/v1/vms/h1/resume', {})).json<VmInfo>().status, 'running');
    assert.equal((await http(d.api, 'POST', '/v1/vms/h1/resume')).status, 409);

    await waitFor(async () => count((await http(d.api, 'GET', '/v1/vms/h1/console')).text, 'B') >= 2, 20_000);
    const con = await http(d.api, 'GET', '/v1/vms/h1/console');
    assert.equal(con.status, 200);
    assert.match(String(con.headers['content-type']), /^text\/plain/);
    assert.match(con.text, /^AB+$/);

    const del = await http(d.api, 'DELETE', '/v1/vms/h1');
    assert.equal(del.status, 200);
    assert.equal(del.json<VmInfo>().name, 'h1');
    assert.equal((await http(d.api, 'GET', '/v1/vms/h1')).status, 404);
    assert.equal((await http(d.api, 'DELETE', '/v1/vms/h1')).status, 404);
  });

  test('console ?follow=1 streams new output and ends when the VM is stopped', async () => {
    const start = await tern(['vm', 'start', VERIFY, '--host', d.api, '--name', 'f1', '--mem', '16M', '--append', 'region=1M pace=5ms']);
    assert.equal(start.code, 0, start.stderr);
    const follower = ternBackground(['vm', 'console', 'f1', '--host', d.api, '--follow'], 30_000);
    assert.ok(await waitFor(() => follower.stdout().startsWith('A'), 10_000), 'following');
    await sleep(500);
    const stop = await tern(['vm', 'stop', 'f1', '--host', d.api]);
    assert.equal(stop.code, 0);
    const r = await follower.result;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^AB+$/);
    assert.ok(count(r.stdout, 'B') >= 20, `followed output should keep growing: ${r.stdout.length} bytes`);
    assert.match(r.stderr, /f1 was stopped on host api-host/);
  });

  test('GET /v1/events streams VM lifecycle events', async () => {
    const [host, port] = d.api.split(':') as [string, string];
    const sock = connect(Number(port), host);
    let got = '';
    sock.on('data', (c: Buffer) => (got += c.toString()));
    sock.write(`GET /v1/events?vm=e1 HTTP/1.1\r\nHost: ${d.api}\r\n\r\n`);
    await waitFor(() => got.includes('retry:'), 5000);
    assert.equal((await tern(['vm', 'start', VERIFY, '--host', d.api, '--name', 'e1', '--mem', '16M', '--append', 'region=1M pace=5ms'])).code, 0);
    assert.equal((await tern(['vm', 'pause', 'e1', '--host', d.api])).code, 0);
    assert.equal((await tern(['vm', 'stop', 'e1', '--host', d.api])).code, 0);
    await waitFor(() => got.includes('event: vm.deleted'), 5000);
    sock.destroy();
    assert.match(got, /text\/event-stream/);
    const types = [...got.matchAll(/^event: (\S+)$/gm)].map((m) => m[1]);
    assert.deepEqual(types, ['vm.created', 'vm.paused', 'vm.deleted']);
    const data = [...got.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]!) as { type: string; vm: string; time: string });
    assert.ok(data.every((e) => e.vm === 'e1' && typeof e.time === 'string'));
  });

  test('bad requests get 4xx with a JSON error and the daemon keeps serving', async () => {
    const image = readFileSync(VERIFY).toString('base64');
    const cases: [string, string, unknown, number, string][] = [
      ['POST', '/v1/vms', '{"name": "x", ', 400, 'invalid-json'],
      ['POST', '/v1/vms', '[1,2]', 400, 'bad-request'],
      ['POST', '/v1/vms', 'null', 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image, imageName: 'verify.elf', memBytes: '32M' }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image, imageName: 'verify.elf', memBytes: 1.5 }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image, imageName: 'verify.elf', memBytes: 4 * 1024 * MiB }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image, imageName: 'verify.elf', memBytes: MiB + 1 }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image, imageName: 'verify.elf', mem: 1 }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image: 42, imageName: 'verify.elf' }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image: 'not base64!', imageName: 'verify.elf' }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: '../etc', image, imageName: 'verify.elf' }, 400, 'bad-request'],
      ['POST', '/v1/vms', { image, imageName: 'verify.elf' }, 400, 'bad-request'],
      ['POST', '/v1/vms', { name: 'x', image: Buffer.from('junk').toString('base64'), imageName: 'junk.elf' }, 400, 'bad-image'],
      ['POST', '/v1/vms/nope/pause', undefined, 404, 'not-found'],
      ['POST', '/v1/vms/nope/pause', { force: true }, 400, 'bad-request'],
      ['GET', '/v1/vms/nope', undefined, 404, 'not-found'],
      ['GET', '/v1/vms/nope/console', undefined, 404, 'not-found'],
      ['DELETE', '/v1/vms/nope', undefined, 404, 'not-found'],
      ['GET', '/v1/vms/%E0%A4%A', undefined, 400, 'bad-request'],
      ['GET', '/v1/nothing', undefined, 404, 'not-found'],
      ['PUT', '/v1/vms', '{}', 405, 'method-not-allowed'],
      ['GET', '/v1/migrations/nope', undefined, 404, 'not-found'],
      ['POST', '/v1/migrations/nope/cancel', undefined, 404, 'not-found'],
      ['POST', '/v1/migrations', { vm: 'nope', to: '127.0.0.1:1', downtime: 5 }, 400, 'bad-request'],
      ['POST', '/v1/migrations', { vm: 'nope', to: '127.0.0.1:1', maxBandwidthBps: -1 }, 400, 'bad-request'],
      ['POST', '/v1/migrations', { vm: 'nope', to: '127.0.0.1:1', stopCopyBandwidthBps: -1 }, 400, 'bad-request'],
      ['POST', '/v1/migrations', { vm: 'nope', to: '127.0.0.1:1', stopCopyBandwidthBps: 'unlimited' }, 400, 'bad-request'],
      ['POST', '/v1/migrations', { vm: 'nope', to: '127.0.0.1:1', guestClock: 'sometimes' }, 400, 'bad-request'],
      ['POST', '/v1/migrations', { vm: 'nope', to: '127.0.0.1:1', verifyRam: 'yes' }, 400, 'bad-request'],
    ];
    for (const [method, path, body, status, code] of cases) {
      const r = await http(d.api, method, path, body);
      assert.equal(r.status, status, `${method} ${path} ${JSON.stringify(body)?.slice(0, 80)}: ${r.text}`);
      assert.match(String(r.headers['content-type']), /^application\/json/);
      const e = r.json<{ error: { code: string; message: string } }>().error;
      assert.equal(e.code, code, `${method} ${path}: ${e.message}`);
      assert.ok(e.message.length > 10);
    }
    const unknown = await http(d.api, 'POST', '/v1/vms', { name: 'x', image, imageName: 'verify.elf', colour: 'red' });
    assert.match(unknown.json<{ error: { message: string } }>().error.message, /unknown field 'colour'/);

    // Duplicate name: 409.
    assert.equal((await http(d.api, 'POST', '/v1/vms', { name: 'dup', image, imageName: 'verify.elf', memBytes: 8 * MiB, bootArgs: 'region=1M pace=5ms' })).status, 201);
    const dup = await http(d.api, 'POST', '/v1/vms', { name: 'dup', image, imageName: 'verify.elf', memBytes: 8 * MiB });
    assert.equal(dup.status, 409);
    assert.equal(dup.json<{ error: { code: string } }>().error.code, 'exists');
    const dupCli = await tern(['vm', 'start', VERIFY, '--host', d.api, '--name', 'dup']);
    assert.equal(dupCli.code, 1);
    assert.match(dupCli.stderr, /already has a VM named 'dup'/);
    assert.equal((await http(d.api, 'DELETE', '/v1/vms/dup')).status, 200);

    // Huge bodies: 413, declared (Content-Length) or not (chunked).
    const huge = await http(d.api, 'POST', '/v1/vms', Buffer.alloc(50 * MiB, 0x41));
    assert.equal(huge.status, 413);
    assert.equal(huge.json<{ error: { code: string } }>().error.code, 'body-too-large');
    const chunked = await http(d.api, 'POST', '/v1/migrations', Buffer.alloc(200 * 1024, 0x20), { headers: { 'transfer-encoding': 'chunked' } });
    assert.equal(chunked.status, 413);

    // Not even HTTP.
    const [host, port] = d.api.split(':') as [string, string];
    const garbage = await new Promise<string>((resolve) => {
      const s = connect(Number(port), host);
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
      s.write('\x00\x01 THIS IS NOT HTTP\r\n\r\n');
      setTimeout(() => s.destroy(), 3000);
    });
    assert.match(garbage, /^HTTP\/1\.1 400/);

    // Still serving.
    const h = await http(d.api, 'GET', '/v1/host');
    assert.equal(h.status, 200);
    assert.equal(h.json<HostInfo>().vms, 0);
  });

  test('VM memory comes out of the host budget (--max-mem)', async () => {
    const small = await startDaemon('small-host', ['--max-mem', '48M']);
    const image = readFileSync(VERIFY).toString('base64');
    const ok = await http(small.api, 'POST', '/v1/vms', { name: 'm1', image, imageName: 'verify.elf', memBytes: 32 * MiB, bootArgs: 'region=1M pace=5ms' });
    assert.equal(ok.status, 201, ok.text);
    const tooMuch = await http(small.api, 'POST', '/v1/vms', { name: 'm2', image, imageName: 'verify.elf', memBytes: 32 * MiB });
    assert.equal(tooMuch.status, 409);
    assert.equal(tooMuch.json<{ error: { code: string } }>().error.code, 'no-memory');
    const info = (await http(small.api, 'GET', '/v1/host')).json<HostInfo>();
    assert.equal(info.memory.usedBytes, 32 * MiB);
    assert.equal(info.memory.freeBytes, 16 * MiB);
    small.proc.kill('SIGTERM');
    assert.deepEqual(await small.exited, { code: 0, signal: null });
  });

  test('--prealloc-ram holds a buffer in the RAM pool from the start; a VM of that size takes it', async () => {
    const pre = await startDaemon('prealloc-host', ['--prealloc-ram', '32M,16M', '--ram-pool', '64M']);
    assert.equal((await http(pre.api, 'GET', '/v1/host')).json<HostInfo>().memory.pooledBytes, 48 * MiB);
    const image = readFileSync(VERIFY).toString('base64');
    const made = await http(pre.api, 'POST', '/v1/vms', { name: 'p1', image, imageName: 'verify.elf', memBytes: 32 * MiB, bootArgs: 'region=1M pace=5ms' });
    assert.equal(made.status, 201, made.text);
    const info = (await http(pre.api, 'GET', '/v1/host')).json<HostInfo>();
    assert.equal(info.memory.pooledBytes, 16 * MiB, 'the 32 MiB buffer went to the VM; the 16 MiB one stays');
    assert.equal(info.memory.usedBytes, 32 * MiB);
    assert.ok(await waitFor(async () => count((await http(pre.api, 'GET', '/v1/vms/p1/console')).text, 'B') >= 2, 20_000), 'the VM runs in preallocated RAM');
    assert.doesNotMatch((await http(pre.api, 'GET', '/v1/vms/p1/console')).text, /X/);
    pre.proc.kill('SIGTERM');
    assert.deepEqual(await pre.exited, { code: 0, signal: null });
  });
});

describe('CLI errors', { timeout: 60_000 }, () => {
  test('usage errors exit 2, unreachable hosts exit 1 with a clear message', async () => {
    for (const args of [['vm', 'list', '--bogus'], ['vm', 'inspect'], ['vm', 'start', VERIFY, '--mem', 'lots'], ['vm', 'list', '--host', 'nohostport'], ['migrate', 'v1'], ['migrate', 'v1', '--to', '127.0.0.1:1', '--max-bandwidth', 'fast'], ['migrate', 'v1', '--to', '127.0.0.1:1', '--guest-clock', 'sometimes'], ['host', 'serve', '--listen', '127.0.0.1:0', '--prealloc-ram', '1G'], ['host', 'serve', '--listen', '127.0.0.1:0', '--prealloc-ram', '256M,100K'], ['host', 'serve', '--listen', '127.0.0.1:0', '--prealloc-ram', 'big']]) {
      const r = await tern(args);
      assert.equal(r.code, 2, `tern ${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.stderr.length > 0);
    }
    const r = await tern(['vm', 'list', '--host', '127.0.0.1:1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach tern host at 127\.0\.0\.1:1: connection refused/);
    const help = await tern(['migrate', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Examples:/);
    assert.match(help.stdout, /--max-bandwidth/);
    assert.match(help.stdout, /--guest-clock <mode>/);
    const bad = await tern(['migrate', 'v1', '--to', '127.0.0.1:1', '--guest-clock', 'sometimes']);
    assert.match(bad.stderr, /--guest-clock: 'sometimes' is not one of continuous, frozen/);
  });
});

describe('daemon lifecycle', { timeout: 60_000 }, () => {
  test('SIGTERM stops every VM and exits 0', async () => {
    const d = await startDaemon('term-host');
    for (const n of ['t1', 't2']) {
      const r = await tern(['vm', 'start', VERIFY, '--host', d.api, '--name', n, '--mem', '16M', '--append', 'region=1M']);
      assert.equal(r.code, 0, r.stderr);
    }
    d.proc.kill('SIGTERM');
    const t0 = Date.now();
    assert.deepEqual(await d.exited, { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 10_000);
    const after = await tern(['host', 'info', '--host', d.api]);
    assert.equal(after.code, 1);
    assert.match(after.stderr, /cannot reach tern host/);
  });

  test('a taken listen address is a clear error', async () => {
    const d = await startDaemon('first');
    const port = d.api.split(':')[1]!;
    const r = await tern(['host', 'serve', '--listen', `127.0.0.1:${port}`, '--name', 'second'], 20_000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot listen for the management API on 127\.0\.0\.1:\d+: the address is already in use/);
    d.proc.kill('SIGTERM');
    await d.exited;
  });
});
