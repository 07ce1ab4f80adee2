import { VirtualClock } from '../../src/machine/clock.js';
import type { IrqSink } from '../../src/machine/bus.js';
import { StateReader, StateWriter, type Stateful } from '../../src/machine/state/codec.js';

/** Saves a part's state section. */
export function save(part: Stateful): Uint8Array {
  const w = new StateWriter();
  part.saveState(w);
  return w.finish();
}

/** Restores a section into a part the way the snapshot container does (exact consumption). */
export function restore(part: Stateful, bytes: Uint8Array, version = part.stateVersion): void {
  const r = new StateReader(bytes, part.stateId);
  part.restoreState(r, version);
  r.end();
}

/** A running clock whose wall time moves only by hand, in whole milliseconds (10 000 ticks each). */
export function fakeClock(): { clock: VirtualClock; advanceMs(ms: number): void } {
  let now = 0;
  const clock = new VirtualClock(() => now);
  clock.start();
  return { clock, advanceMs: (ms: number) => void (now += ms) };
}

/** Records mip changes. */
export class FakeHart {
  mip = 0;
  calls: Array<[number, boolean]> = [];
  readonly setMip = (mask: number, level: boolean): void => {
    this.calls.push([mask, level]);
    this.mip = level ? this.mip | mask : this.mip & ~mask;
  };
}

/** An IrqSink that remembers each line's level and every change. */
export class FakeIrq implements IrqSink {
  levels = new Map<number, boolean>();
  changes: Array<[number, boolean]> = [];
  setIrq(line: number, level: boolean): void {
    this.levels.set(line, level);
    this.changes.push([line, level]);
  }
  level(line: number): boolean {
    return this.levels.get(line) ?? false;
  }
}
