// This machine's clocks as a migration peer sees them: which boot it is, and CLOCK_MONOTONIC.
import { readFileSync } from 'node:fs';

let cachedBootId: Uint8Array | undefined;

/**
 * The running kernel's boot id (/proc/sys/kernel/random/boot_id) as 16 bytes; all zero where
 * there is none (not Linux, not readable). Two processes with the same non-zero boot id read
 * the same CLOCK_MONOTONIC (unless a time namespace offsets one of them).
 */
export function bootId(): Uint8Array {
  if (cachedBootId !== undefined) return cachedBootId;
  const id = new Uint8Array(16);
  try {
    const hex = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().replace(/-/g, '');
    if (/^[0-9a-f]{32}$/i.test(hex)) for (let i = 0; i < 16; i++) id[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  } catch {
    /* no boot id: stays zero */
  }
  return (cachedBootId = id);
}

/** `id` is this machine's boot id, and that is known (not zero): whoever sent it reads our CLOCK_MONOTONIC. */
export function isThisBoot(id: Uint8Array): boolean {
  const mine = bootId();
  if (id.length !== mine.length || mine.every((b) => b === 0)) return false;
  for (let i = 0; i < mine.length; i++) if (id[i] !== mine[i]) return false;
  return true;
}

/** CLOCK_MONOTONIC in microseconds (process.hrtime): the same clock in every process of one boot. */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}
