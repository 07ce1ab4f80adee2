/**
 * Full-size PageBatchBuilders kept between migrations. A builder holds ~4.2 MB, zero-filled when
 * allocated: on a daemon's heap that is about a thousand fresh pages, each a kernel page fault
 * (10-16 µs on a virtualised host). A PageSender takes four; allocating them held the daemon's
 * thread, which also relays its VMs' network and console, for 30-100 ms at the start of every
 * migration (measured: the tick guest's client saw a 65 ms gap there). Builders come back when
 * their sender is disposed, each only once its last frame has left (write callback), so a pooled
 * builder is never still being read by a socket.
 */
import { MAX_BATCH_PAGES, PageBatchBuilder } from './wire/index.js';

/** Two migrations' worth (two senders of four builders): about 34 MB held at most. */
const MAX_POOLED = 8;

const pool: PageBatchBuilder[] = [];

/** A builder of MAX_BATCH_PAGES entries: a pooled one, else a new one. */
export function takeBuilder(): PageBatchBuilder {
  return pool.pop() ?? new PageBatchBuilder(MAX_BATCH_PAGES);
}

/** Gives back a builder nothing refers to any more (its frames written, its sender done). */
export function giveBuilder(b: PageBatchBuilder): void {
  if (b.capacity !== MAX_BATCH_PAGES || pool.length >= MAX_POOLED || pool.includes(b)) return;
  pool.push(b);
}

/** Builders held for reuse (tests). */
export function pooledBuilders(): number {
  return pool.length;
}
