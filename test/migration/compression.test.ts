// Compression in the engine on memory that does not shrink (random pages) next to memory that
// does: the random batches trigger the backoff (sent plain without trying), the text-like ones
// still go compressed, and the destination's RAM digest matches.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { staticVm } from '../helpers/static-vm.js';
import { MiB, NullDestinationHost, migrate, startServer } from '../helpers/test-hosts.js';
import { prng } from './wire/helpers.js';

for (const alg of ['lz4', 'zstd'] as const) {
  test(`${alg}: random memory backs off, text-like memory compresses, digests match`, async () => {
    const host = new NullDestinationHost();
    const { server, port } = await startServer(host);
    try {
      // 32 MiB of random pages, then 32 MiB of text-like pages: 8 + 8 full batches.
      const ram = GuestRam.allocate(64 * MiB);
      const rand = prng(11);
      const randomBytes = 32 * MiB;
      for (let i = 0; i < randomBytes; i += 4) ram.i32[i >> 2] = (rand() * 0x1_0000_0000) | 1;
      for (let i = randomBytes; i < ram.bytes; i++) ram.u8[i] = 0x61 + ((i * 7) % 23);
      const r = await migrate(staticVm(ram, `mixed-${alg}`), port, { compression: alg }).report;
      assert.equal(r.status, 'completed', r.error?.message);
      assert.equal(r.ramDigestMatch, true);
      const z = r.compression!;
      assert.ok(z.skippedBatches >= 4, `skipped ${z.skippedBatches}`);
      assert.ok(z.inputBytes < ram.bytes, 'skipped batches were not offered to the compressor');
      assert.ok(z.ratio > 1.2, `ratio ${z.ratio}`);
      assert.ok(r.bytesTransferred < ram.bytes - 16 * MiB, `the text-like part shrank: ${r.bytesTransferred}`);
    } finally {
      await server.close();
    }
  });
}
