import { DirtyLog } from './dirty-log.js';
import { MAX_RAM_BYTES, MIN_RAM_BYTES, PAGE_SHIFT, PAGE_SIZE, RAM_BASE } from './layout.js';
import { PageMarks } from './page-marks.js';
import { PresenceMap } from './presence-map.js';
import { allocateSignals } from './signals.js';

/** Everything needed to open the same guest RAM in another thread (structured-clone safe). */
export interface RamDescriptor {
  readonly bytes: number;
  readonly data: SharedArrayBuffer;
  readonly dirty: SharedArrayBuffer;
  readonly presence: SharedArrayBuffer;
  readonly signals: SharedArrayBuffer;
  /** Balloon: pages given back by the guest (see page-marks.ts). */
  readonly discarded: SharedArrayBuffer;
  /** Free page hints of the current hint run. */
  readonly freeHints: SharedArrayBuffer;
  /** Pages written while dirty logging was off (see GuestRam.written). */
  readonly written: SharedArrayBuffer;
  /** Whether every writer of this RAM marks `written` (see GuestRam.writesTracked). */
  readonly writesTracked: boolean;
}

export class RamSizeError extends Error {
  constructor(readonly requested: number) {
    super(`RAM size ${requested} bytes is not allowed: it must be a multiple of 4 KiB between ${MIN_RAM_BYTES} bytes (1 MiB) and ${MAX_RAM_BYTES} bytes (2 GiB)`);
    this.name = 'RamSizeError';
  }
}

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/**
 * Guest RAM at RAM_BASE: a SharedArrayBuffer in 4 KiB pages, with the dirty log and the presence
 * map beside it. The typed-array views are public because the CPU reads and writes them directly.
 */
export class GuestRam {
  readonly base = RAM_BASE;
  readonly bytes: number;
  readonly pageCount: number;
  readonly buffer: SharedArrayBuffer;
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly i32: Int32Array;
  readonly dirty: DirtyLog;
  readonly presence: PresenceMap;
  /** Shared signalling slots (see signals.ts). */
  readonly signals: Int32Array;
  /** Pages inside the balloon: zeroed by the device, migration need not send them. */
  readonly discarded: PageMarks;
  /** Pages the guest hinted free during the current hint run (virtio-balloon free page hints). */
  readonly freeHints: PageMarks;
  /**
   * Pages that may hold non-zero bytes. The guest's stores and device writes mark here while
   * dirty logging is off and in the dirty log while it is on (which folds its marks in here
   * whenever it gives them up); the loader, the firmware tree and incoming migrations mark what
   * they write. A page marked in neither map still holds zeros, so a migration can send it as a
   * zero page without reading it: on a virtualised host, reading a never-touched page faults it
   * in, which costs more than sending it (10 us a page measured here).
   */
  readonly written: PageMarks;
  /**
   * Whether the owner guarantees the rule above: every write to this RAM outside the guest and
   * its devices marks `written`. The host daemon's RAM does; RAM a test or a tool fills by hand
   * does not, and is read page by page.
   */
  readonly writesTracked: boolean;

  private constructor(d: RamDescriptor) {
    this.bytes = d.bytes;
    this.pageCount = d.bytes >>> PAGE_SHIFT;
    this.buffer = d.data;
    this.u8 = new Uint8Array(d.data);
    this.u16 = new Uint16Array(d.data);
    this.i32 = new Int32Array(d.data);
    this.signals = new Int32Array(d.signals);
    this.written = new PageMarks(d.written, this.pageCount);
    this.writesTracked = d.writesTracked;
    this.dirty = new DirtyLog(d.dirty, this.pageCount, this.written.bits);
    this.presence = new PresenceMap(d.presence, this.pageCount, this.signals, this.u8);
    this.discarded = new PageMarks(d.discarded, this.pageCount);
    this.freeHints = new PageMarks(d.freeHints, this.pageCount);
  }

  /** Whether a VM may have `bytes` of RAM: a multiple of 4 KiB from 1 MiB to just under 2 GiB. */
  static isValidSize(bytes: number): boolean {
    return Number.isInteger(bytes) && bytes >= MIN_RAM_BYTES && bytes <= MAX_RAM_BYTES && bytes % PAGE_SIZE === 0;
  }

  /**
   * New guest RAM, all zero. `reuse` supplies the data buffer (already zeroed, exactly `bytes`
   * long) from RAM whose VM is gone: its pages are already backed, so writing them costs no
   * page faults. `trackWrites`: see `writesTracked`.
   */
  static allocate(bytes: number, reuse?: SharedArrayBuffer, trackWrites = false): GuestRam {
    if (!GuestRam.isValidSize(bytes)) throw new RamSizeError(bytes);
    if (reuse !== undefined && reuse.byteLength !== bytes) throw new RangeError(`reused RAM is ${reuse.byteLength} bytes, not ${bytes}`);
    const pages = bytes / PAGE_SIZE;
    const presence = new SharedArrayBuffer(pages);
    new Uint8Array(presence).fill(1);
    return new GuestRam({
      bytes,
      data: reuse ?? new SharedArrayBuffer(bytes),
      dirty: new SharedArrayBuffer(DirtyLog.bytesFor(pages)),
      presence,
      signals: allocateSignals().buffer as SharedArrayBuffer,
      discarded: new SharedArrayBuffer(pages),
      freeHints: new SharedArrayBuffer(pages),
      written: new SharedArrayBuffer(pages),
      writesTracked: trackWrites,
    });
  }

  static open(d: RamDescriptor): GuestRam {
    return new GuestRam(d);
  }

  describe(): RamDescriptor {
    return {
      bytes: this.bytes,
      data: this.buffer,
      dirty: this.dirty.bits.buffer as SharedArrayBuffer,
      presence: this.presence.bits.buffer as SharedArrayBuffer,
      signals: this.signals.buffer as SharedArrayBuffer,
      discarded: this.discarded.bits.buffer as SharedArrayBuffer,
      freeHints: this.freeHints.bits.buffer as SharedArrayBuffer,
      written: this.written.bits.buffer as SharedArrayBuffer,
      writesTracked: this.writesTracked,
    };
  }

  /**
   * The page holds zeros and was never written, known without reading it (writes tracked, the
   * page marked neither written nor dirty). A store racing with this check marks the page dirty,
   * so a migration that took this answer before copying sends the page again in its next round.
   */
  knownZero(page: number): boolean {
    return this.writesTracked && this.written.bits[page] === 0 && Atomics.load(this.dirty.bits, page) === 0;
  }

  /** Marks [offset, offset+length) as possibly non-zero (a write from outside the guest). */
  markWritten(offset: number, length: number): void {
    this.written.markRange(offset, length);
  }

  /** Guest-physical address to RAM offset, or -1 when the range is not wholly inside RAM. */
  offsetOf(addr: number, length: number): number {
    const off = (addr - RAM_BASE) >>> 0;
    return off + length <= this.bytes && length >= 0 ? off : -1;
  }

  /** A view of one page (no copy). */
  page(page: number): Uint8Array {
    return this.u8.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
  }

  /**
   * Whether a page holds only zero bytes. A page known to be zero (knownZero) is not read: reading
   * a page never touched would make the kernel fault it in.
   */
  isZeroPage(page: number): boolean {
    if (this.knownZero(page)) return true;
    // A native compare (memcmp) against a zero page: 15 GB/s against 8.7 for a JS loop once
    // compiled, and as fast on a migration's first round, before V8 has compiled anything.
    const at = page * PAGE_SIZE;
    return ZERO_PAGE.compare(this.asBuffer(), at, at + PAGE_SIZE) === 0;
  }

  private bufferView: Buffer | undefined;

  /** The RAM as one Node Buffer (made once; no copy). */
  private asBuffer(): Buffer {
    return (this.bufferView ??= Buffer.from(this.buffer));
  }
}
