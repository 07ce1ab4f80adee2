// Warm-up traffic (protocol 1.6, WARM_TRAFFIC): the source sends the first bytes its VM's clients
// sent; the destination's guest-image warm-up replays them to its throwaway boot of the image;
// the samples travel on with the VM. Real gateway, daemons, the kv guest and a RESP client.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'node:net';
import type { HostInfo } from '../../src/host/api-types.js';
import { http, killAll, startDaemon, tern, ternJson, type Daemon } from '../host/helpers.js';
import { connectRetry, freePort, killGateways, resp, startGateway, type GatewayProc } from './helpers.js';

const KV = join(fileURLToPath(new URL('../../../guests/images/', import.meta.url)), 'kv.elf');

let gw: GatewayProc;
let a: Daemon;
let b: Daemon;

before(async () => {
  gw = await startGateway();
  // Neither host keeps a vCPU thread, so every arrival boots the image for a warm-up.
  [a, b] = await Promise.all([startDaemon('wt-a', ['--warm-threads', '0']), startDaemon('wt-b', ['--warm-threads', '0'])]);
});

after(() => {
  killGateways();
  killAll();
});

async function hostInfo(d: Daemon): Promise<HostInfo> {
  return (await http(d.api, 'GET', '/v1/host')).json<HostInfo>();
}

/** Sends one RESP command and reads one whole reply line (or bulk string). */
function ask(sock: Socket, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      const bulk = /^\$(\d+)\r\n/.exec(got);
      if (bulk !== null ? got.length >= bulk[0].length + Number(bulk[1]) + 2 : got.endsWith('\r\n')) {
        sock.off('data', onData);
        clearTimeout(t);
        resolve(got);
      }
    };
    const t = setTimeout(() => {
      sock.off('data', onData);
      reject(new Error(`no answer to ${args.join(' ')}; got ${JSON.stringify(got)}`));
    }, 20_000);
    sock.on('data', onData);
    sock.write(resp(...args));
  });
}

async function migrate(from: Daemon, to: Daemon): Promise<void> {
  const r = await ternJson<{ status: string; error?: { message: string } }>(['migrate', 'kv-wt', '--from', from.api, '--to', to.api], 120_000);
  assert.equal(r.value.status, 'completed', r.value.error?.message ?? r.stderr);
}

test('the destination warm-up replays the first bytes clients sent; the real VM never sees them; the samples travel on', { timeout: 180_000 }, async () => {
  const port = await freePort();
  const start = await tern(['vm', 'start', KV, '--host', a.api, '--name', 'kv-wt', '--mem', '32M', '--expose', `${port}:6379`, '--gateway', gw.listen]);
  assert.equal(start.code, 0, start.stderr);
  const sock = await connectRetry(port);
  try {
    // The connection's first bytes (its sample) set k; later ones set it again.
    assert.equal(await ask(sock, 'SET', 'k', 'first'), '+OK\r\n');
    assert.equal(await ask(sock, 'SET', 'k', 'second'), '+OK\r\n');
    assert.deepEqual((await hostInfo(b)).warmUpTraffic, { connections: 0, answers: 0 });

    await migrate(a, b);
    const atB = await hostInfo(b);
    assert.equal(atB.warmUps, 1);
    assert.ok(atB.warmUpTraffic.connections >= 1, JSON.stringify(atB.warmUpTraffic));
    assert.ok(atB.warmUpTraffic.answers >= 1, `the throwaway boot answered the replayed SET: ${JSON.stringify(atB.warmUpTraffic)}`);
    // The replayed 'SET k first' went to the throwaway boot only.
    assert.equal(await ask(sock, 'GET', 'k'), '$6\r\nsecond\r\n');

    // Back to a, which kept no thread: it warms up with the samples that came through b (b
    // never saw the connection open).
    await migrate(b, a);
    const atA = await hostInfo(a);
    assert.equal(atA.warmUps, 1);
    assert.ok(atA.warmUpTraffic.answers >= 1, JSON.stringify(atA.warmUpTraffic));
    assert.equal(await ask(sock, 'GET', 'k'), '$6\r\nsecond\r\n');
    assert.equal(await ask(sock, 'DBSIZE'), ':1\r\n', 'nothing of the replay reached the VM');

    const human = await tern(['host', 'info', '--host', a.api]);
    assert.match(human.stdout, /answers to replayed client traffic on \d+ connections/);
  } finally {
    sock.destroy();
  }
  assert.equal((await tern(['vm', 'stop', 'kv-wt', '--host', a.api])).code, 0);
});
