// A migration that fails after the source paused the VM (the destination refuses the state at
// commitment): the source thaws its network, the gateway re-routes nothing, and an exact stream
// through the gateway goes on as if nothing happened. In-process: a real Gateway, a HostedVm on a
// real vCPU thread with virtio-vsock running kv, the real migration engine.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { HostedVm } from '../../src/host/hosted-vm.js';
import { newVmDevices } from '../../src/host/host.js';
import { attachNetwork, gatewayLinks } from '../../src/host/vm-net-setup.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { Vcpu } from '../../src/machine/vcpu/vcpu.js';
import { Gateway } from '../../src/net/gateway.js';
import { silentLogger } from '../../src/util/log.js';
import { imageBytes } from '../helpers/images.js';
import { TestDestinationHost, migrate, startServer } from '../helpers/test-hosts.js';
import { ExactStream, connectRetry, freePort } from './helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

test('a migration that fails after the pause: the stream stays on the source, exact', { timeout: 120_000 }, async () => {
  const gateway = new Gateway({ name: 'gw', exposeHost: '127.0.0.1', log: silentLogger });
  const bound = await gateway.start('127.0.0.1', 0);
  cleanups.push(() => gateway.close());

  const image = imageBytes('kv');
  const devices = newVmDevices();
  const vcpu = await Vcpu.start({ ram: GuestRam.allocate(32 * 1024 * 1024), name: 'kvf', devices, start: { kind: 'boot', boot: { image, imageName: 'kv.elf', bootargs: '' } } });
  const vm = new HostedVm({
    uuid: new Uint8Array(randomBytes(16)),
    name: 'kvf',
    config: { imageDigest: 'sha256:' + createHash('sha256').update(image).digest('hex'), bootArgs: '', devices: [], memBytes: 32 * 1024 * 1024, imageName: 'kv.elf' },
    vcpu,
    origin: 'boot',
  });
  const host = { name: 'src', log: silentLogger };
  cleanups.push(async () => {
    gatewayLinks(host).stopAll();
    await vm.stop({ why: 'deleted' });
  });
  const port = await freePort();
  attachNetwork(host, vm, { gateway: `127.0.0.1:${bound.port}`, exposures: [{ hostPort: port, vmPort: 6379 }], epoch: 0 });

  const stream = new ExactStream(await connectRetry(port), 'f');
  cleanups.push(() => stream.stop());
  await stream.progress(100_000);

  const dest = new TestDestinationHost();
  dest.loadError = new Error('refused for the test');
  const { server, port: migPort } = await startServer(dest);
  cleanups.push(() => server.close());
  const { report } = migrate(vm, migPort, { downtimeLimitMs: 1000 });
  const r = await report;
  assert.equal(r.status, 'failed');
  assert.match(r.error?.message ?? '', /refused for the test|load/);
  assert.ok(r.downtimeMs > 0, 'the VM was paused (stop-and-copy happened) before the failure');

  // Relaying resumed on the source: the stream goes on, byte-exact, and nothing moved.
  await stream.progress(200_000);
  assert.equal(vm.network?.isAttached, true);
  const st = gateway.status();
  assert.equal(st.vms[0]!.epoch, 0);
  assert.equal(st.vms[0]!.connections, 1);
});
