/**
 * Backs an incoming VM's fresh guest RAM before its pages arrive (protocol 1.8, WRITTEN): writes
 * every page the source says may hold data, leaving its bytes as they are (an atomic OR of 0 into
 * its first word), a slice per turn of the event loop. The kernel's page fault for each page (on
 * a virtual machine, also the hypervisor's for the memory behind it) is then taken while the
 * destination waits for round 1, which comes after the guest-image warm-up, not while round 1's
 * bytes are copied in. Pages the guest never wrote arrive as zero markers and stay unbacked.
 *
 * Runs on the thread that receives the pages, so it never races with them; it must stop before
 * the VM can run (IncomingVms.load), whose stores it could otherwise race with.
 */
import { PAGE_SIZE } from '../machine/memory/layout.js';
import type { GuestRam } from '../machine/memory/ram.js';
import type { PageRuns } from '../migration/wire/page-runs.js';

/** Pages written per turn: 1 MiB, a fraction of a millisecond where backed, a few where faulting. */
const PAGES_PER_TURN = 256;
const WORDS_PER_PAGE = PAGE_SIZE / 4;

/** What a prefault did, for the log and the host's count. */
export interface PrefaultResult {
  /** Pages written. */
  readonly pages: number;
  /** Pages the source listed. */
  readonly listed: number;
  /** False when stopped before the end (the state or a failure came first). */
  readonly complete: boolean;
  readonly ms: number;
}

export class Prefault {
  private readonly words: Int32Array;
  private readonly runs: Uint32Array;
  /** Index of the run being written (pairs: first, length) and the next page in it. */
  private run = 0;
  private page: number;
  private written = 0;
  private readonly started = performance.now();
  private turn: NodeJS.Immediate | undefined;
  private ended = false;

  constructor(
    ram: GuestRam,
    private readonly set: PageRuns,
    private readonly onEnd: (r: PrefaultResult) => void,
  ) {
    this.words = new Int32Array(ram.buffer);
    this.runs = set.runs;
    this.page = this.runs.length > 0 ? this.runs[0]! : 0;
    this.schedule();
  }

  /** Ends it now (idempotent); the pages not yet written are backed as they arrive. */
  stop(): void {
    this.end(false);
  }

  private schedule(): void {
    // Not unref'd: with only unref'd immediates the loop blocks in poll, and a step ran only when
    // other I/O or a timer woke it (measured: 32 steps in 650 ms). It ends at load() or release().
    this.turn = setImmediate(this.step);
  }

  private readonly step = (): void => {
    this.turn = undefined;
    if (this.ended) return;
    const runs = this.runs;
    const words = this.words;
    let budget = PAGES_PER_TURN;
    while (budget > 0 && this.run < runs.length) {
      const end = runs[this.run]! + runs[this.run + 1]!;
      let p = this.page;
      for (; p < end && budget > 0; p++, budget--) Atomics.or(words, p * WORDS_PER_PAGE, 0);
      this.written += p - this.page;
      this.page = p;
      if (p >= end) {
        this.run += 2;
        if (this.run < runs.length) this.page = runs[this.run]!;
      }
    }
    if (this.run >= runs.length) this.end(true);
    else this.schedule();
  };

  private end(complete: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (this.turn !== undefined) clearImmediate(this.turn);
    this.turn = undefined;
    this.onEnd({ pages: this.written, listed: this.set.pageCount, complete, ms: performance.now() - this.started });
  }
}
