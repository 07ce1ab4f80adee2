import { StateReader, StateWriter, type Stateful } from './state/codec.js';

/** Bytes of console history kept with the VM; older output is dropped, and the count of dropped bytes kept. */
export const CONSOLE_HISTORY_BYTES = 1 << 20;

/**
 * Everything the guest printed on its console, kept with the machine so it travels across
 * migrations. A ring of the last CONSOLE_HISTORY_BYTES bytes.
 */
export class ConsoleLog implements Stateful {
  readonly stateId = 'console';
  readonly stateVersion = 1;
  private ring = new Uint8Array(CONSOLE_HISTORY_BYTES);
  private head = 0; // next write position
  private filled = 0;
  /** Total bytes ever written (including dropped ones). */
  total = 0;

  push(byte: number): void {
    this.ring[this.head] = byte;
    this.head = (this.head + 1) % CONSOLE_HISTORY_BYTES;
    if (this.filled < CONSOLE_HISTORY_BYTES) this.filled++;
    this.total++;
  }

  pushAll(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) this.push(bytes[i]!);
  }

  /** The retained history, oldest first (a copy). */
  contents(): Uint8Array {
    const out = new Uint8Array(this.filled);
    const start = (this.head - this.filled + CONSOLE_HISTORY_BYTES) % CONSOLE_HISTORY_BYTES;
    const first = Math.min(this.filled, CONSOLE_HISTORY_BYTES - start);
    out.set(this.ring.subarray(start, start + first), 0);
    out.set(this.ring.subarray(0, this.filled - first), first);
    return out;
  }

  get dropped(): number {
    return this.total - this.filled;
  }

  saveState(w: StateWriter): void {
    w.f64(this.total);
    w.bytes(this.contents());
  }

  restoreState(r: StateReader): void {
    const total = r.f64();
    const data = r.bytes(CONSOLE_HISTORY_BYTES);
    if (!Number.isSafeInteger(total) || total < data.length) r.fail(`console total ${total} is smaller than its ${data.length} retained bytes`);
    // No clearing: only the `filled` bytes are ever read. (Clearing the whole MiB faulted in the
    // pages of a new machine's ring: 2 ms of a destination's first load, inside the downtime.)
    this.ring.set(data, 0);
    this.filled = data.length;
    this.head = data.length % CONSOLE_HISTORY_BYTES;
    this.total = total;
  }
}
