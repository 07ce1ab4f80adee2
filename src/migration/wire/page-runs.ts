/**
 * Sets of pages as sorted runs {first u32, length u32}, used by RESUME (pages the destination
 * still lacks) and DISCARD (pages it must drop). Canonical form: runs ascending, each length >= 1,
 * separated by at least one page, all below ramPages; so a set never needs more than
 * ceil(ramPages / 2) runs and has exactly one encoding.
 */
import { MAX_PAGE_RUNS } from './constants.js';
import type { FrameWriter, PayloadReader } from './bytes.js';
import { WireError } from './errors.js';

export interface PageRuns {
  /** The size of the universe: pages of guest RAM. */
  readonly ramPages: number;
  /** Pages in the set (the sum of the run lengths). */
  readonly pageCount: number;
  /** [first0, length0, first1, length1, ...]. */
  readonly runs: Uint32Array;
}

/**
 * The runs of pages whose byte in a one-byte-per-page map (PresenceMap.bits, DirtyLog.bits) is
 * zero ('zero': e.g. absent pages) or non-zero ('nonzero': e.g. dirty pages).
 */
export function pageRunsFromMap(map: Uint8Array, ramPages: number, select: 'zero' | 'nonzero'): PageRuns {
  if (map.length < ramPages) throw new RangeError(`pageRunsFromMap: map has ${map.length} entries, ramPages is ${ramPages}`);
  const want = select === 'nonzero';
  const out: number[] = [];
  let count = 0;
  let p = 0;
  while (p < ramPages) {
    if ((map[p] !== 0) !== want) {
      p++;
      continue;
    }
    const first = p;
    while (p < ramPages && (map[p] !== 0) === want) p++;
    out.push(first, p - first);
    count += p - first;
  }
  return { ramPages, pageCount: count, runs: Uint32Array.from(out) };
}

/** The runs of a list of page numbers (any order, duplicates allowed). */
export function pageRunsFromList(pages: ArrayLike<number>, ramPages: number): PageRuns {
  const sorted = Float64Array.from(pages as ArrayLike<number>).sort();
  const out: number[] = [];
  let count = 0;
  for (let i = 0; i < sorted.length; ) {
    const first = sorted[i]!;
    if (!Number.isInteger(first) || first < 0 || first >= ramPages) throw new RangeError(`pageRunsFromList: page ${first} is outside 0..${ramPages - 1}`);
    let end = first + 1;
    i++;
    while (i < sorted.length && sorted[i]! <= end) {
      if (sorted[i] === end) end++;
      i++;
    }
    out.push(first, end - first);
    count += end - first;
  }
  return { ramPages, pageCount: count, runs: Uint32Array.from(out) };
}

/** Calls fn for every page in the set, ascending. */
export function forEachRunPage(set: PageRuns, fn: (page: number) => void): void {
  const r = set.runs;
  for (let i = 0; i < r.length; i += 2) {
    const end = r[i]! + r[i + 1]!;
    for (let p = r[i]!; p < end; p++) fn(p);
  }
}

export function runsContain(set: PageRuns, page: number): boolean {
  const r = set.runs;
  let lo = 0;
  let hi = r.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const first = r[2 * mid]!;
    if (page < first) hi = mid - 1;
    else if (page >= first + r[2 * mid + 1]!) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Checks canonical form; `fail` decides the error (decode: the peer's fault, encode: ours). */
function checkRuns(set: PageRuns, fail: (code: 'bad-value' | 'bad-count', field: string, text: string) => never): void {
  const { ramPages, runs } = set;
  if (!Number.isInteger(ramPages) || ramPages < 1 || ramPages > 0xffff_ffff) fail('bad-value', 'ramPages', `${ramPages} is not a page count in 1..2^32-1`);
  if (runs.length % 2 !== 0) fail('bad-count', 'runs', `has an odd number of words (${runs.length})`);
  let next = 0; // lowest page the next run may start at
  let sum = 0;
  for (let i = 0; i < runs.length; i += 2) {
    const first = runs[i]!;
    const length = runs[i + 1]!;
    const k = i / 2;
    if (length === 0) fail('bad-value', `runs[${k}].length`, 'is 0');
    if (first < next) fail('bad-value', `runs[${k}].first`, `${first} overlaps, touches or precedes the previous run (next free page ${next})`);
    if (first + length > ramPages) fail('bad-value', `runs[${k}]`, `${first}+${length} runs past ramPages ${ramPages}`);
    next = first + length + 1;
    sum += length;
  }
  if (sum !== set.pageCount) fail('bad-count', 'pageCount', `is ${set.pageCount}, but the runs hold ${sum} pages`);
}

export function runsBytes(set: PageRuns): number {
  return 12 + set.runs.length * 4;
}

/** Writes {ramPages u32, pageCount u32, runCount u32, runs}. */
export function writeRuns(w: FrameWriter, message: string, set: PageRuns): void {
  checkRuns(set, (code, field, text) => {
    throw new WireError(code, text, { message, field });
  });
  const n = set.runs.length / 2;
  if (n > MAX_PAGE_RUNS) throw new WireError('bad-count', `${n} runs exceed ${MAX_PAGE_RUNS}`, { message, field: 'runCount' });
  w.u32(set.ramPages).u32(set.pageCount).u32(n);
  for (let i = 0; i < set.runs.length; i++) w.u32(set.runs[i]!);
}

export function readRuns(r: PayloadReader): PageRuns {
  const ramPages = r.u32('ramPages');
  const pageCount = r.u32('pageCount');
  const n = r.u32('runCount');
  if (n > MAX_PAGE_RUNS) r.fail('bad-count', 'runCount', `${n} exceeds ${MAX_PAGE_RUNS}`);
  const raw = r.counted(n * 8, 'runs'); // checked against the payload before allocating
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const runs = new Uint32Array(n * 2);
  for (let i = 0; i < runs.length; i++) runs[i] = view.getUint32(i * 4, true);
  const set: PageRuns = { ramPages, pageCount, runs };
  checkRuns(set, (code, field, text) => r.fail(code, field, text));
  return set;
}
