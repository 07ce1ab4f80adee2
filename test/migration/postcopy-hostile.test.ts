// The post-copy source against a hand-written destination: out-of-range and malformed
// PAGE_REQUESTs never crash it (the first are ignored, the second pause the migration), demand
// requests are answered with demand PAGES, and a resume refused as unknown-session gives the VM
// back to the source.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  Capability,
  FrameType,
  PROTOCOL_VERSION,
  decodeHello,
  decodePages,
  encodeAccept,
  encodeActivated,
  encodeFrame,
  encodePageRequest,
  encodeRefuse,
  randomId,
} from '../../src/migration/wire/index.js';
import { fakeDestination, waitFor as until } from '../helpers/fake-destination.js';
import { MiB, bootTestVm, migrate, stopAllVcpus } from '../helpers/test-hosts.js';

after(() => stopAllVcpus());

test('hostile PAGE_REQUESTs after the switch: ignored or a pause, never a crash; unknown-session on resume gives the VM back', { timeout: 120_000 }, async () => {
  const vm = await bootTestVm('verify', 'region=4M mark=16', 16 * MiB, 'hostile');
  await new Promise((r) => setTimeout(r, 300));
  const fake = await fakeDestination();
  const pages = (16 * MiB) / 4096;
  const session = randomId();
  let refuseResume = false;
  fake.onFrame = (f, s) => {
    if (f.type === FrameType.Hello) {
      const h = decodeHello(f.payload);
      assert.equal(h.mode, 'postcopy');
      if (refuseResume) {
        s.end(encodeRefuse({ version: PROTOCOL_VERSION, reason: 'unknown-session', text: 'restarted, no such session' }));
        return;
      }
      s.write(encodeAccept({ version: PROTOCOL_VERSION, sessionId: session, capabilities: Capability.ZeroPages | Capability.PostcopyRecovery }));
    } else if (f.type === FrameType.State) {
      s.write(encodeActivated({ switchoverUs: 1000 }));
      // Out of range (the wire decoder cannot know the RAM size): ignored by the source.
      s.write(encodePageRequest({ requestId: 1, pages: Uint32Array.of(0xfffffff0) }));
      // A real request for the last page, before the push gets there.
      s.write(encodePageRequest({ requestId: 2, pages: Uint32Array.of(pages - 1) }));
    }
  };
  const { migration, report } = migrate(vm, fake.port, { mode: 'postcopy', prepaging: 'linear', verifyRam: false, maxBandwidthBps: 4 * MiB });
  // The demand answer: PAGES with the demand flag and requestId 2, holding the last page.
  await until(() => fake.frames.some((f) => f.type === FrameType.Pages && (f.flags & 1) === 1), 20_000, 'a demand batch');
  const demand = fake.frames.find((f) => f.type === FrameType.Pages && (f.flags & 1) === 1)!;
  const batch = decodePages(demand.payload, demand.flags, pages);
  assert.equal(batch.requestId, 2);
  assert.equal(batch.page(0), pages - 1);
  assert.equal(migration.progress().status, 'postcopy-active');
  // A malformed PAGE_REQUEST (count 0): a protocol error from the destination pauses the migration.
  const bad = encodeFrame(FrameType.PageRequest, Uint8Array.of(3, 0, 0, 0, 0, 0, 0, 0));
  fake.sockets[0]!.write(bad);
  await until(() => migration.progress().status === 'postcopy-paused', 10_000, 'postcopy-paused');
  assert.equal(vm.resumes, 0, 'the VM is not resumed at the source after the switch');
  migration.cancel(); // ignored after the switch
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(migration.progress().status, 'postcopy-paused');
  // The destination "restarted": it does not know the session, so the VM never ran there.
  refuseResume = true;
  assert.equal(migration.resume(), true);
  const rep = await report;
  assert.equal(rep.status, 'failed');
  assert.match(rep.error!.message, /does not hold the post-copy session/);
  assert.equal(vm.resumes, 1, 'the source resumed the VM itself');
  const before = vm.count('B');
  await until(() => vm.count('B') > before, 20_000, 'the VM running at the source again');
  assert.equal(vm.count('X'), 0);
  fake.close();
});
