// RESUMED_AT (protocol 1.3) at the pre-copy source, against a hand-written destination: from
// another machine (another boot id) the downtime stays an estimate; before COMMITTED, or without
// the capability, the frame is a protocol error and the VM keeps running on the source.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  Capability,
  FrameType,
  PROTOCOL_VERSION,
  decodeHello,
  encodeAccept,
  encodeActivated,
  encodeCommitted,
  encodeResumedAt,
  randomId,
  type Frame,
} from '../../src/migration/wire/index.js';
import type { Socket } from 'node:net';
import { bootId } from '../../src/util/host-clock.js';
import { fakeDestination, waitFor } from '../helpers/fake-destination.js';
import { MiB, bootTestVm, migrate, stopAllVcpus } from '../helpers/test-hosts.js';

after(() => stopAllVcpus());

/** A destination that takes everything and commits; `extra` adds its own frames at two points. */
async function committingDestination(grant: number, extra: { afterAccept?: (s: Socket) => void; afterCommit?: (s: Socket) => void }) {
  const fake = await fakeDestination();
  let offered = 0;
  fake.onFrame = (f: Frame, s: Socket) => {
    if (f.type === FrameType.Hello) {
      offered = decodeHello(f.payload).capabilities;
      s.write(encodeAccept({ version: PROTOCOL_VERSION, sessionId: randomId(), capabilities: grant }));
      extra.afterAccept?.(s);
    } else if (f.type === FrameType.Complete) {
      s.write(encodeCommitted({ ramDigest: undefined }));
      extra.afterCommit?.(s);
      s.end(encodeActivated({ switchoverUs: 1500 }));
    }
  };
  return { fake, offered: () => offered };
}

test('RESUMED_AT from another boot: the downtime is estimated, not read off the peer\'s clock', { timeout: 60_000 }, async () => {
  const vm = await bootTestVm('verify', 'region=1M', 16 * MiB, 'resumed-other');
  const other = bootId().map((b) => b ^ 0xff); // not this machine's boot
  const { fake, offered } = await committingDestination(Capability.ZeroPages | Capability.ResumedAt, {
    // A resume "time" an hour after anything here: taken at face value it would be the downtime.
    afterCommit: (s) => s.write(encodeResumedAt({ bootId: other, resumedUs: Number(process.hrtime.bigint() / 1000n) + 3_600_000_000 })),
  });
  try {
    const r = await migrate(vm, fake.port, { verifyRam: false }).report;
    assert.equal(r.status, 'completed', JSON.stringify(r.error));
    assert.ok((offered() & Capability.ResumedAt) !== 0, 'the source offers resumed-at');
    assert.equal(r.downtimeExact, false);
    assert.ok(r.downtimeMs >= 1.5 && r.downtimeMs < 60_000, `estimated: ${r.downtimeMs} ms`);
  } finally {
    fake.close();
  }
});

for (const [name, grant, when] of [
  ['before COMMITTED', Capability.ZeroPages | Capability.ResumedAt, 'afterAccept'],
  ['without the capability', Capability.ZeroPages, 'afterCommit'],
] as const) {
  test(`RESUMED_AT ${name}: ${when === 'afterAccept' ? 'a protocol error; the VM keeps running on the source' : 'refused, never used for the downtime'}`, { timeout: 60_000 }, async () => {
    const vm = await bootTestVm('verify', 'region=1M', 16 * MiB, `resumed-${when}`);
    const frame = (s: Socket): void => void s.write(encodeResumedAt({ bootId: bootId(), resumedUs: 1 }));
    const { fake } = await committingDestination(grant, when === 'afterAccept' ? { afterAccept: frame } : { afterCommit: frame });
    try {
      const r = await migrate(vm, fake.port, { verifyRam: false }).report;
      if (when === 'afterAccept') {
        assert.equal(r.status, 'failed');
        assert.match(r.error!.message, /RESUMED_AT before COMMITTED/);
        const before = vm.count('B');
        await waitFor(() => vm.count('B') > before, 20_000, 'the VM running on the source');
        assert.equal(vm.count('X'), 0);
      } else {
        // After COMMITTED the VM is the destination's whatever follows; the frame is refused all the same.
        assert.equal(r.status, 'completed');
        assert.notEqual(r.downtimeExact, true);
      }
    } finally {
      fake.close();
    }
  });
}
