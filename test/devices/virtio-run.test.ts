// tern run --device: the guest finds the virtio devices it asked for (munch's self-ballooning
// fills a balloon), and a bad --device is a usage error.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tern } from '../helpers/cli.js';
import { imagePath, munchLines } from '../helpers/images.js';

test('tern run --device balloon: munch balloon=self gives pages to the balloon', { timeout: 60_000 }, async () => {
  const r = await tern(['run', imagePath('munch'), '-m', '64M', '--device', 'vsock', '--device', 'balloon', '--timeout', '3s',
    '--append', 'wws=1M rate=1M rss=1M report=500ms balloon=self balloon-period=300ms heap=8M:1s']);
  assert.equal(r.code, 124, r.stderr);
  const lines = munchLines(r.stdout);
  assert.ok(lines.some((l) => / balloon=[1-9]\d*p /.test(l)), r.stdout);
  for (const l of lines) assert.match(l, / rss=ok$/);
});

test('tern run without --device: munch balloon=on finds no balloon, as on QEMU without -device', { timeout: 60_000 }, async () => {
  const r = await tern(['run', imagePath('munch'), '-m', '64M', '--timeout', '2s', '--append', 'wws=1M rate=1M rss=1M report=500ms balloon=on']);
  assert.match(r.stdout, /no usable virtio-balloon device/);
});

test('a bad --device is a usage error (exit 2)', async () => {
  for (const [arg, msg] of [['gpu', /unknown device/], ['vsock,cid=2', /guestCid/], ['vsock,mtu=9', /unknown parameter/]] as const) {
    const r = await tern(['run', imagePath('hello'), '--device', arg]);
    assert.equal(r.code, 2, `${arg}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
  const r = await tern(['run', imagePath('hello'), '--device', 'balloon', '--device', 'balloon']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /second virtio-balloon/);
});
