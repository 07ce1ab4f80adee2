// A pause right after a resume must hold: the worker used to apply the (older) resume message
// after the pause had returned, and run the guest on (or make the pause wait forever). Migration
// relies on it: a paused VM must stay paused while its last pages are copied.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { sleep, until } from '../helpers/images.js';
import { MiB, bootTestVm, stopAllVcpus } from '../helpers/test-hosts.js';

after(stopAllVcpus);

test('pause immediately after resume stops the guest', async () => {
  const vm = await bootTestVm('verify', 'region=1M', 16 * MiB, 'pause-race');
  assert.ok(await until(() => vm.count('B') >= 3, 30_000));
  const v = vm.vcpu;
  for (let i = 0; i < 20; i++) {
    await v.pause();
    v.resume();
    await v.pause();
    const a = (await v.stats()).instret;
    await sleep(10);
    const b = (await v.stats()).instret;
    assert.equal(b, a, `iteration ${i}: no instruction retires after pause() returned`);
    assert.equal(v.state, 'paused');
    v.resume();
  }
  const n = vm.count('B');
  assert.ok(await until(() => vm.count('B') > n, 30_000), 'and resume still resumes');
});
