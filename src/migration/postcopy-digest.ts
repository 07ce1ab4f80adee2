/**
 * The RAM digest (`--verify`) for post-copy and hybrid. After the switch the guest runs at the
 * destination and rewrites its RAM, so a digest of all RAM at the end means nothing; instead
 * both sides digest each page as it was at the switch: the source at the pause, the destination
 * when the page arrived (or, for a page it already held, at the switch). The digest is SHA-256
 * over the pages' SHA-256s in page order.
 */
import { createHash } from 'node:crypto';
import { PAGE_SIZE } from '../machine/memory/layout.js';

/** HELLO config key: the source will send a post-copy RAM digest (the destination removes it). */
export const VERIFY_KEY = 'verifyRam';

export class PageDigests {
  readonly hashes: Uint8Array;

  constructor(readonly pageCount: number) {
    this.hashes = new Uint8Array(pageCount * 32);
  }

  /** Records page `p` as it is now in `ram`. */
  take(ram: Uint8Array, p: number): void {
    const h = createHash('sha256').update(ram.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE)).digest();
    this.hashes.set(h, p * 32);
  }

  /** Every page as it is now. */
  takeAll(ram: Uint8Array): this {
    for (let p = 0; p < this.pageCount; p++) this.take(ram, p);
    return this;
  }

  digest(): Uint8Array {
    return new Uint8Array(createHash('sha256').update(this.hashes).digest());
  }
}
