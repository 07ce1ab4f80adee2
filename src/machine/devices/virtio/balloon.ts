import type { AccessSize } from '../../bus.js';
import { PAGE_SHIFT, PAGE_SIZE } from '../../memory/layout.js';
import { BalloonDriverBits, Sig } from '../../memory/signals.js';
import type { StateReader, StateWriter } from '../../state/codec.js';
import { DeviceId } from './constants.js';
import type { VirtioBackend, VirtioTransport } from './mmio-transport.js';
import { readConfigBytes } from './mmio-transport.js';
import { DescriptorChain, VirtqueueError } from './split-queue.js';

// Queue indices as QEMU creates them (fixed: the stats queue always exists).
export const BALLOON_INFLATE = 0;
export const BALLOON_DEFLATE = 1;
export const BALLOON_STATS = 2;
export const BALLOON_FREE_PAGE = 3;

export const BALLOON_F_STATS_VQ = 1;
export const BALLOON_F_FREE_PAGE_HINT = 3;

/** free_page_hint_cmd_id values with a fixed meaning; real command ids start at 0x80000000. */
export const BALLOON_CMD_ID_STOP = 0;
export const BALLOON_CMD_ID_DONE = 1;
export const BALLOON_CMD_ID_MIN = 0x8000_0000;

/** Free page hint state, as QEMU's FREE_PAGE_HINT_S_*. */
export const enum HintState {
  Stop = 0,
  Requested = 1,
  Start = 2,
  Done = 3,
}

/** Host commands through Sig.HintCommand: (sequence << 2) | HintCommand. */
export const enum HintCommand {
  Start = 1,
  Stop = 2,
  Done = 3,
}

/** Balloon pages are 4 KiB whatever the guest's page size (VIRTIO_BALLOON_PFN_SHIFT). */
const PFN_SHIFT = 12;
/** Discarded-page runs a state section may carry (bounded before allocation). */
const MAX_RUNS = 1 << 20;

/**
 * virtio-balloon (device id 5, §5.5) as QEMU implements it: inflateq/deflateq carry arrays of
 * le32 page frame numbers; an inflated page is zeroed and marked in `ram.discarded`, a deflated
 * one unmarked. Free page hinting (VIRTIO_BALLOON_F_FREE_PAGE_HINT): the host publishes a command
 * id in config; the guest answers on free_page_vq with that id (out buffer) and then in-buffers
 * covering free memory, which the device marks in `ram.freeHints` while the run is started.
 * The stats queue exists (QEMU always offers it) but the device never returns its buffer.
 * Host requests (target, hint commands) arrive through signal slots and are applied in poll().
 */
export class VirtioBalloon implements VirtioBackend {
  readonly stateId = 'virtio-balloon';
  readonly stateVersion = 1;
  readonly deviceId = DeviceId.Balloon;
  readonly queueCount = 4;
  readonly featuresLo = (1 << BALLOON_F_STATS_VQ) | (1 << BALLOON_F_FREE_PAGE_HINT);
  readonly featuresHi = 0;
  /** Host's target size of the balloon, in 4 KiB pages. */
  numPages = 0;
  /** Guest-reported size of the balloon. */
  actual = 0;
  hintCmdId = BALLOON_CMD_ID_MIN;
  hintState = HintState.Stop;
  private hostSeq: number;
  /** What Sig.BalloonDriver last said (-1: not yet published). */
  private driverBits = -1;
  private readonly signals: Int32Array;
  private t!: VirtioTransport;
  private readonly chain = new DescriptorChain();
  private readonly config = new Uint8Array(16);
  private readonly configView = new DataView(this.config.buffer);

  constructor(opts: { signals: Int32Array }) {
    this.signals = opts.signals;
    this.hostSeq = Atomics.load(this.signals, Sig.HintCommand) >>> 2;
    this.publish();
  }

  /** Mirrors the device's values into the signal slots the host side reads. */
  private publish(): void {
    Atomics.store(this.signals, Sig.BalloonTarget, this.numPages | 0);
    Atomics.store(this.signals, Sig.BalloonActual, this.actual | 0);
    Atomics.store(this.signals, Sig.HintCmdId, this.hintCmdId | 0);
  }

  attach(t: VirtioTransport): void {
    this.t = t;
  }

  private fillConfig(): void {
    const dv = this.configView;
    dv.setUint32(0, this.numPages >>> 0, true);
    dv.setUint32(4, this.actual >>> 0, true);
    const s = this.hintState;
    dv.setUint32(8, s === HintState.Requested ? this.hintCmdId : s === HintState.Stop ? BALLOON_CMD_ID_STOP : s === HintState.Done ? BALLOON_CMD_ID_DONE : 0, true);
    dv.setUint32(12, 0, true); // poison_val: PAGE_POISON is not offered
  }

  readConfig(offset: number, size: AccessSize): number {
    // The host's latest target and hint command show at once (also before DRIVER_OK).
    this.poll();
    this.fillConfig();
    return readConfigBytes(this.config, offset, size);
  }

  writeConfig(offset: number, size: AccessSize, value: number): void {
    // Only `actual` (bytes 4..7) is writable; narrower writes merge into it.
    if (offset + size <= 4 || offset >= 8) return;
    this.fillConfig();
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      if (at >= 4 && at < 8) this.config[at] = (value >>> (8 * i)) & 0xff;
    }
    this.actual = this.configView.getUint32(4, true);
    Atomics.store(this.signals, Sig.BalloonActual, this.actual | 0);
  }

  reset(): void {
    // QEMU's device reset stops a hint run.
    if (this.hintState !== HintState.Stop) this.hintState = HintState.Stop;
    this.publishDriver(0);
  }

  /** Tells the host side whether a driver runs, whether it hints, and the hint state. */
  private publishDriver(bits: number): void {
    if (bits === this.driverBits) return;
    this.driverBits = bits;
    Atomics.store(this.signals, Sig.BalloonDriver, bits);
  }

  private driverState(): number {
    const t = this.t;
    if (!t.live) return 0;
    return (
      BalloonDriverBits.Live |
      (t.driverHas(BALLOON_F_FREE_PAGE_HINT) ? BalloonDriverBits.FreePageHint : 0) |
      (this.hintState << BalloonDriverBits.HintStateShift) |
      ((this.hostSeq & BalloonDriverBits.AppliedMask) << BalloonDriverBits.AppliedShift)
    );
  }

  notify(queue: number): void {
    if (queue === BALLOON_INFLATE || queue === BALLOON_DEFLATE) this.pages(queue);
    else if (queue === BALLOON_FREE_PAGE) {
      this.freePages();
      this.publishDriver(this.driverState());
    }
    // BALLOON_STATS: the buffer stays with the device; statistics are not collected.
  }

  poll(): void {
    this.publishDriver(this.driverState());
    const target = Atomics.load(this.signals, Sig.BalloonTarget) >>> 0;
    if (target !== this.numPages) {
      this.numPages = target;
      this.t.configChanged();
    }
    const cmd = Atomics.load(this.signals, Sig.HintCommand);
    const seq = cmd >>> 2;
    if (seq !== this.hostSeq) {
      this.hostSeq = seq;
      this.hostHintCommand(cmd & 3, Atomics.load(this.signals, Sig.HintCmdId) >>> 0);
    }
  }

  /** Applies a hint command from the host (QEMU's free_page_start/stop/done). */
  hostHintCommand(kind: number, cmdId: number): void {
    if (kind === HintCommand.Start) {
      this.hintCmdId = cmdId;
      this.hintState = HintState.Requested;
      this.t.configChanged();
    } else if (kind === HintCommand.Stop) {
      if (this.hintState === HintState.Stop) return;
      this.hintState = HintState.Stop;
      this.t.configChanged();
    } else if (kind === HintCommand.Done) {
      if (this.hintState === HintState.Done) return;
      this.hintState = HintState.Done;
      this.t.configChanged();
    }
    this.publishDriver(this.driverState());
  }

  /** inflateq / deflateq: arrays of le32 PFNs in the readable buffers. */
  private pages(queue: number): void {
    const t = this.t;
    const q = t.queue(queue);
    const dma = t.dma;
    const ram = dma.ram;
    const c = this.chain;
    let n = 0;
    while (q.peek(dma, c)) {
      for (let i = 0; i < c.count; i++) {
        if (c.writable[i] !== 0) continue;
        const off = c.off[i]!;
        const words = c.len[i]! >>> 2;
        for (let k = 0; k < words; k++) {
          const pfn = dma.u32(off + 4 * k);
          // PFNs outside RAM are ignored, as QEMU does.
          if (pfn >= 2 ** (32 - PFN_SHIFT)) continue;
          const page = ram.offsetOf(pfn << PFN_SHIFT >>> 0, PAGE_SIZE);
          if (page < 0) continue;
          const p = page >>> PAGE_SHIFT;
          if (queue === BALLOON_INFLATE) {
            dma.zero(page, PAGE_SIZE);
            ram.discarded.mark(p);
          } else {
            ram.discarded.unmark(p);
          }
        }
      }
      q.take();
      q.pushUsed(dma, c.head, 0);
      n++;
    }
    if (n > 0) t.usedBuffers(queue);
  }

  /** free_page_vq, as QEMU's get_free_page_hints. */
  private freePages(): void {
    const t = this.t;
    const q = t.queue(BALLOON_FREE_PAGE);
    const dma = t.dma;
    const c = this.chain;
    let n = 0;
    while (q.peek(dma, c)) {
      if (c.readableBytes > 0) {
        if (c.readableBytes !== 4 || c.count === 0 || c.writable[0] !== 0) throw new VirtqueueError(BALLOON_FREE_PAGE, `a command id buffer must be 4 bytes, got ${c.readableBytes}`);
        const id = dma.u32(c.off[0]!);
        if (this.hintState === HintState.Requested && id === this.hintCmdId) this.hintState = HintState.Start;
        else if (this.hintState === HintState.Start) this.hintState = HintState.Stop;
      }
      if (c.writableBytes > 0 && this.hintState === HintState.Start) {
        const hints = dma.ram.freeHints;
        for (let i = 0; i < c.count; i++) {
          if (c.writable[i] === 0) continue;
          // Only whole pages inside the buffer count as free.
          const first = (c.off[i]! + PAGE_SIZE - 1) >>> PAGE_SHIFT;
          const end = (c.off[i]! + c.len[i]!) >>> PAGE_SHIFT;
          for (let p = first; p < end; p++) hints.mark(p);
        }
      }
      q.take();
      q.pushUsed(dma, c.head, 0);
      n++;
    }
    if (n > 0) t.usedBuffers(BALLOON_FREE_PAGE);
  }

  saveState(w: StateWriter): void {
    w.u32(this.numPages);
    w.u32(this.actual);
    w.u32(this.hintCmdId);
    w.u8(this.hintState);
    const runs = this.t.dma.ram.discarded.runs();
    w.u32(runs.length);
    for (const [first, count] of runs) {
      w.u32(first);
      w.u32(count);
    }
  }

  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported virtio-balloon state version ${version}`);
    const numPages = r.u32();
    const actual = r.u32();
    const cmdId = r.u32();
    const state = r.u8();
    if (state > HintState.Done) r.fail(`free page hint state ${state} is unknown`);
    const ram = this.t.dma.ram;
    const n = r.u32();
    if (n > MAX_RUNS) r.fail(`${n} discarded-page runs exceeds ${MAX_RUNS}`);
    const runs = new Uint32Array(2 * n);
    let prevEnd = 0;
    for (let i = 0; i < n; i++) {
      const first = r.u32();
      const count = r.u32();
      if (count === 0 || first < prevEnd || first + count > ram.pageCount) r.fail(`discarded run ${i} (${first}+${count}) is empty, out of order, or beyond the ${ram.pageCount} pages of RAM`);
      runs[2 * i] = first;
      runs[2 * i + 1] = count;
      prevEnd = first + count;
    }
    this.numPages = numPages;
    this.actual = actual;
    this.hintCmdId = cmdId;
    this.hintState = state as HintState;
    ram.discarded.clear();
    for (let i = 0; i < n; i++) for (let p = runs[2 * i]!, e = p + runs[2 * i + 1]!; p < e; p++) ram.discarded.mark(p);
    this.hostSeq = Atomics.load(this.signals, Sig.HintCommand) >>> 2;
    this.publish();
  }
}
