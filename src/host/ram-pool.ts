/**
 * Guest RAM kept after its VM left this host (migrated away, deleted), for the next VM of the
 * same size. A fresh SharedArrayBuffer's pages are faulted in by the kernel on first write, which
 * on a virtualised host costs several times what copying the page does: an incoming migration
 * into fresh RAM moves pages at a fraction of the link's speed. Reused RAM is already backed.
 * Bounded: buffers beyond the cap are left to the garbage collector.
 */
export class RamPool {
  private readonly buffers: SharedArrayBuffer[] = [];
  private held = 0;

  /** `capBytes` 0 disables the pool. */
  constructor(readonly capBytes: number) {}

  /** Bytes held for reuse. */
  get bytes(): number {
    return this.held;
  }

  /** Takes back the RAM of a VM that is gone; no thread may touch `buffer` any more. */
  put(buffer: SharedArrayBuffer): void {
    if (this.buffers.includes(buffer)) return;
    if (buffer.byteLength > this.capBytes) return;
    // Keep the newest: evict the oldest until it fits.
    while (this.held + buffer.byteLength > this.capBytes && this.buffers.length > 0) {
      this.held -= this.buffers.shift()!.byteLength;
    }
    this.buffers.push(buffer);
    this.held += buffer.byteLength;
  }

  /** A zeroed buffer of exactly `bytes`, or undefined when none is held. */
  take(bytes: number): SharedArrayBuffer | undefined {
    const i = this.buffers.findIndex((b) => b.byteLength === bytes);
    if (i < 0) return undefined;
    const [buffer] = this.buffers.splice(i, 1);
    this.held -= bytes;
    new Uint8Array(buffer!).fill(0);
    return buffer;
  }
}
