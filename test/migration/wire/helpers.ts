// Test helpers: a seeded PRNG and a little-endian byte builder that is independent of the codec,
// so hand-made buffers check the documented layout rather than the code against itself.
import { Capability, FrameType, PROTOCOL_VERSION, type Hello, type MachineConfig } from '../../../src/migration/wire/index.js';

/** mulberry32: small, fast, deterministic. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randInt(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

type Part = number[] | Uint8Array;

export const le = {
  u8: (v: number): number[] => [v & 0xff],
  u16: (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff],
  u32: (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff],
  u64: (v: number): number[] => [...le.u32(v % 2 ** 32), ...le.u32(Math.floor(v / 2 ** 32))],
  ascii: (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0)),
  utf8: (s: string): number[] => Array.from(new TextEncoder().encode(s)),
  fill: (n: number, v: number): number[] => new Array<number>(n).fill(v),
};

export function cat(...parts: Part[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A frame by hand: type, flags, reserved 0, length LE, payload. */
export function frame(type: number, payload: Part, flags = 0): Uint8Array {
  return cat([type, flags, 0, 0], le.u32(payload.length), payload);
}

export function concatFrames(frames: Uint8Array[]): Uint8Array {
  return cat(...frames);
}

export const VM_ID = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);
export const SESSION_ID = Uint8Array.from({ length: 16 }, (_, i) => 0x10 + i);

export const CONFIG: MachineConfig = {
  imageDigest: 'sha256:' + 'ab'.repeat(32),
  bootArgs: 'console=ttyS0 app=redis',
  devices: [{ kind: 'uart' }, { kind: 'virtio-vsock', slot: 0, cid: 3 }],
};

export function sampleHello(over: Partial<Omit<Hello, 'type'>> = {}): Hello {
  return {
    type: FrameType.Hello,
    version: PROTOCOL_VERSION,
    vmId: VM_ID,
    vmName: 'redis-1',
    ramBytes: 128 * 1024 * 1024,
    pageSize: 4096,
    config: CONFIG,
    mode: 'precopy',
    capabilities: Capability.ZeroPages | Capability.Xbzrle,
    streamIndex: 0,
    streamCount: 1,
    sessionId: new Uint8Array(16),
    ...over,
  };
}

/** A page of recognisable bytes. */
export function pageOf(seed: number): Uint8Array {
  const p = new Uint8Array(4096);
  for (let i = 0; i < p.length; i++) p[i] = (seed * 31 + i * 7) & 0xff;
  return p;
}
