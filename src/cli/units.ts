/** Parsers for the sizes, durations and rates users type, QEMU-style. */

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/**
 * A byte size such as 256M, 1G, 64KiB or 4096. A bare number means MiB when `bareIsMiB`
 * (QEMU's -m convention), bytes otherwise.
 */
export function parseSize(text: string, what: string, bareIsMiB = false): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m?.[2]?.toLowerCase() ?? '';
  if (m === null || !(unit in SIZE_UNITS)) throw new UsageError(`${what}: '${text}' is not a size (examples: 4096, 64K, 256M, 1G)`);
  const mult = unit === '' && bareIsMiB ? 1024 ** 2 : SIZE_UNITS[unit]!;
  const v = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(v)) throw new UsageError(`${what}: '${text}' is too large`);
  return v;
}

const TIME_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, ms: 1, s: 1000, m: 60_000, min: 60_000 };

/** A duration such as 50ms, 2s, 300us; a bare number is milliseconds. Returns milliseconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m?.[2]?.toLowerCase() || 'ms';
  if (m === null || !(unit in TIME_UNITS)) throw new UsageError(`${what}: '${text}' is not a duration (examples: 50ms, 2s, 300us)`);
  return Number(m[1]) * TIME_UNITS[unit]!;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

const RATE_PREFIX: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
const RATE_PREFIX_BINARY: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * A transfer rate in bytes per second. Network units are decimal: 1Gbit = 1Gbps = 125 000 000 B/s,
 * 100Mbit/s, 500MB/s = 500 000 000 B/s; binary byte units: 64MiB/s. A bare prefix means binary
 * bytes per second as QEMU's migrate_set_speed does (500M = 500 MiB/s); a bare number is B/s.
 * 0 means unlimited.
 */
export function parseRate(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)(bits?|b|B|)(\/s|ps)?\s*$/.exec(text);
  const bad = (): UsageError => new UsageError(`${what}: '${text}' is not a rate (examples: 1Gbit, 100Mbit, 500MB/s, 64MiB/s, 0 = unlimited)`);
  if (m === null) throw bad();
  const [, num, prefixRaw = '', binary = '', unit = '', per = ''] = m;
  const prefix = prefixRaw.toLowerCase();
  const value = Number(num);
  let bytesPerSec: number;
  if (unit === 'b' || unit === 'bit' || unit === 'bits') {
    if (binary !== '') throw bad();
    bytesPerSec = (value * RATE_PREFIX[prefix]!) / 8;
  } else if (unit === 'B') {
    bytesPerSec = value * (binary !== '' ? RATE_PREFIX_BINARY[prefix]! : RATE_PREFIX[prefix]!);
  } else {
    // No unit letter: '500M' is QEMU's MiB/s; a bare number is bytes per second.
    if (per !== '' && prefix === '') throw bad();
    bytesPerSec = value * RATE_PREFIX_BINARY[prefix]!;
  }
  const v = Math.round(bytesPerSec);
  if (!Number.isSafeInteger(v)) throw new UsageError(`${what}: '${text}' is too large`);
  if (v === 0 && value !== 0) throw new UsageError(`${what}: '${text}' is below 1 byte per second`);
  return v;
}

/** One of `choices`, or a usage error naming them. */
export function parseChoice<T extends string>(text: string, choices: readonly T[], what: string): T {
  if (!(choices as readonly string[]).includes(text)) throw new UsageError(`${what}: '${text}' is not one of ${choices.join(', ')}`);
  return text as T;
}

/** parseRate, or 'unlimited' (0). */
export function parseRateOrUnlimited(text: string, what: string): number {
  return text.trim() === 'unlimited' ? 0 : parseRate(text, what);
}

/** A rate for people: bits per second, as network people and QEMU's 'mbps' speak of bandwidth. */
export function formatRate(bytesPerSec: number): string {
  if (!Number.isFinite(bytesPerSec) || bytesPerSec <= 0) return '0 bit/s';
  const bits = bytesPerSec * 8;
  const units: [number, string][] = [[1e12, 'Tbit/s'], [1e9, 'Gbit/s'], [1e6, 'Mbit/s'], [1e3, 'kbit/s']];
  for (const [scale, unit] of units) {
    if (bits >= scale) {
      const v = bits / scale;
      return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${unit}`;
    }
  }
  return `${Math.round(bits)} bit/s`;
}

/** A duration for people: 850 us, 42 ms, 1.24 s, 3 min 5 s. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1) return `${Math.round(ms * 1000)} us`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  const min = Math.floor(ms / 60_000);
  return `${min} min ${Math.round((ms - min * 60_000) / 1000)} s`;
}
