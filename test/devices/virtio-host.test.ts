// The host gives every VM virtio-vsock (cid 3) and virtio-balloon, and an incoming migration is
// accepted with exactly the device kinds this host provides.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { Host } from '../../src/host/host.js';
import { IncomingVms } from '../../src/host/incoming.js';
import { RefusedError, type IncomingVm } from '../../src/migration/vm-port.js';
import { silentLogger } from '../../src/util/log.js';
import { imagePath } from '../helpers/images.js';

const MiB = 1024 * 1024;

function incoming(name: string, devices: IncomingVm['config']['devices']): IncomingVm {
  return { uuid: new Uint8Array(16).fill(name.length), name, ramBytes: 4 * MiB, config: { imageDigest: 'sha256:00', bootArgs: '', devices } };
}

test('a VM created on a host has virtio-vsock (cid 3) and virtio-balloon, in its config and on its vCPU', async () => {
  const host = new Host({ name: 'h', maxMemBytes: 64 * MiB, log: silentLogger });
  try {
    const image = new Uint8Array(await readFile(imagePath('hello')));
    const vm = await host.create({ name: 'v', image, imageName: 'hello.elf', memBytes: 16 * MiB, bootArgs: '' });
    assert.deepEqual(vm.config.devices, [{ kind: 'virtio-vsock', guestCid: 3 }, { kind: 'virtio-balloon' }]);
    assert.equal(vm.vcpu.vsock?.guestCid, 3);
    assert.ok(vm.vcpu.balloon);
  } finally {
    await host.shutdown();
  }
});

test('incoming: the host\'s device kinds are accepted, others refused as config-mismatch', async () => {
  const host = new Host({ name: 'h', maxMemBytes: 64 * MiB, log: silentLogger });
  const inc = new IncomingVms(host);
  try {
    for (const [devices, why] of [
      [[{ kind: 'virtio-gpu' }], /cannot provide the VM's devices: .*unknown device kind 'virtio-gpu'/],
      [[{ kind: 'virtio-vsock', guestCid: 2 }], /guestCid/],
      [[{ kind: 'virtio-balloon' }, { kind: 'virtio-balloon' }], /second virtio-balloon/],
    ] as const) {
      assert.throws(
        () => inc.reserve(incoming('x', devices as unknown as IncomingVm['config']['devices'])),
        (e: unknown) => e instanceof RefusedError && e.reason === 'config-mismatch' && why.test(e.message),
      );
    }
    assert.equal(inc.count, 0, 'nothing reserved by a refusal');
    const vm = incoming('ok', [{ kind: 'virtio-vsock', guestCid: 3 }, { kind: 'virtio-balloon' }]);
    const r = inc.reserve(vm);
    assert.equal(inc.count, 1);
    inc.release(vm, r);
    assert.equal(inc.count, 0);
  } finally {
    await host.shutdown();
  }
});
