/**
 * Console history a destination receives live in CONSOLE frames (console-precopy, protocol 1.7),
 * kept until the state is loaded. Each frame after the first continues where the one before
 * ended, or starts later (the source's history dropped what lay between: over 1 MiB printed
 * between two frames); going back is a protocol violation. The newest MAX_CONSOLE_BYTES are kept.
 */
import { lastBytes } from '../machine/console-log.js';
import { MAX_CONSOLE_BYTES } from './wire/index.js';

export class ReceivedConsole {
  private chunks: Uint8Array[] = [];
  private bytes = 0;
  private end = -1;

  /** Adds a frame's history (copied); returns why it does not follow the history so far, if it does not. */
  add(end: number, bytes: Uint8Array): string | undefined {
    const start = end - bytes.length;
    if (this.end >= 0 && start < this.end) return `CONSOLE history [${start}, ${end}) goes back before the end of the history received (${this.end})`;
    if (this.end >= 0 && start > this.end) {
      this.chunks = [];
      this.bytes = 0;
    }
    if (bytes.length > 0) {
      this.chunks.push(new Uint8Array(bytes)); // a copy: the frame's bytes are a view of the reader's buffer
      this.bytes += bytes.length;
    }
    this.end = end;
    while (this.chunks.length > 1 && this.bytes - this.chunks[0]!.length >= MAX_CONSOLE_BYTES) this.bytes -= this.chunks.shift()!.length;
    return undefined;
  }

  /** The history received (the newest MAX_CONSOLE_BYTES), or undefined when no CONSOLE came. */
  history(): { end: number; bytes: Uint8Array } | undefined {
    if (this.end < 0) return undefined;
    const only = this.chunks.length === 1 ? this.chunks[0]! : undefined;
    if (only !== undefined && only.length <= MAX_CONSOLE_BYTES) return { end: this.end, bytes: only };
    return { end: this.end, bytes: lastBytes(this.chunks, MAX_CONSOLE_BYTES) };
  }
}
