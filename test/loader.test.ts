import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ImageError, loadImage } from '../src/machine/loader.js';
import { GuestRam } from '../src/machine/memory/ram.js';

const MiB = 1024 * 1024;
const RAM = 0x8000_0000;

interface Seg {
  type?: number;
  paddr: number;
  vaddr?: number;
  data: Uint8Array;
  memsz?: number;
  flags?: number;
  /** Override the file offset / size written in the header. */
  offset?: number;
  filesz?: number;
}

interface ElfSpec {
  cls?: number;
  data?: number;
  type?: number;
  machine?: number;
  entry?: number;
  phentsize?: number;
  phoff?: number;
  segs: Seg[];
}

/** A hand-made ELF32 image: header, program headers, then each segment's bytes. */
function elf(spec: ElfSpec): Uint8Array {
  const phoff = spec.phoff ?? 52;
  const phSize = 32 * spec.segs.length;
  let dataAt = 52 + phSize;
  const offsets = spec.segs.map((s) => {
    const at = dataAt;
    dataAt += s.data.length;
    return at;
  });
  const out = new Uint8Array(Math.max(dataAt, phoff + phSize));
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, spec.cls ?? 1, spec.data ?? 1, 1, 0]);
  dv.setUint16(16, spec.type ?? 2, true);
  dv.setUint16(18, spec.machine ?? 243, true);
  dv.setUint32(20, 1, true);
  dv.setUint32(24, spec.entry ?? RAM, true);
  dv.setUint32(28, phoff, true);
  dv.setUint16(40, 52, true);
  dv.setUint16(42, spec.phentsize ?? 32, true);
  dv.setUint16(44, spec.segs.length, true);
  spec.segs.forEach((s, i) => {
    const p = phoff + 32 * i;
    dv.setUint32(p, s.type ?? 1, true);
    dv.setUint32(p + 4, s.offset ?? offsets[i]!, true);
    dv.setUint32(p + 8, s.vaddr ?? s.paddr, true);
    dv.setUint32(p + 12, s.paddr, true);
    dv.setUint32(p + 16, s.filesz ?? s.data.length, true);
    dv.setUint32(p + 20, s.memsz ?? s.data.length, true);
    dv.setUint32(p + 24, s.flags ?? 5, true);
    out.set(s.data, offsets[i]!);
  });
  return out;
}

const ram = (mib = 2): GuestRam => GuestRam.allocate(mib * MiB);

function expectImageError(fn: () => unknown, pattern: RegExp, file = 'guest.elf'): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ImageError, `expected ImageError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.match(e.message, pattern);
    assert.ok(e.message.startsWith(`${file}: `), e.message);
    return true;
  });
}

test('an ELF32 RISC-V executable: segments copied, bss zeroed, entry from the header', () => {
  const r = ram();
  r.u8.fill(0xee, 0x2000, 0x3000); // stale bytes where .bss goes
  const text = Uint8Array.from({ length: 64 }, (_, i) => i + 1);
  const data = new Uint8Array([0xaa, 0xbb, 0xcc]);
  const img = elf({
    entry: RAM + 0x10,
    segs: [
      { paddr: RAM, data: text },
      { paddr: RAM + 0x2000, data, memsz: 0x1000, flags: 6 },
      { type: 4, paddr: 0, data: new Uint8Array(8) }, // PT_NOTE: ignored
    ],
  });
  const res = loadImage(img, r, { name: 'guest.elf' });
  assert.deepEqual(res, { entry: RAM + 0x10, lowAddr: RAM, highAddr: RAM + 0x3000, format: 'elf' });
  assert.deepEqual(r.u8.subarray(0, 64), text);
  assert.deepEqual([...r.u8.subarray(0x2000, 0x2003)], [0xaa, 0xbb, 0xcc]);
  assert.ok(r.u8.subarray(0x2003, 0x3000).every((b) => b === 0), 'memsz beyond filesz is zero-filled');
  assert.equal(r.dirty.isDirty(0), true, 'loaded pages are marked in the dirty log');
});

test('segments load at their physical address; the entry is translated like QEMU', () => {
  const r = ram();
  const img = elf({ entry: 0x1004, segs: [{ paddr: RAM + 0x1000, vaddr: 0x1000, data: new Uint8Array(16) }] });
  const res = loadImage(img, r, { name: 'guest.elf' });
  assert.equal(res.entry, RAM + 0x1004);
  assert.equal(res.lowAddr, RAM + 0x1000);
});

test('raw binaries load at the start of RAM with the entry there', () => {
  const r = ram();
  const bin = new Uint8Array([0x6f, 0, 0, 0]);
  assert.deepEqual(loadImage(bin, r, { name: 'loop.bin' }), { entry: RAM, lowAddr: RAM, highAddr: RAM + 4, format: 'raw' });
  assert.deepEqual(r.u8.subarray(0, 4), bin);
  assert.equal(loadImage(bin, r, { name: 'loop.img', format: 'raw' }).format, 'raw');
  assert.equal(loadImage(elf({ segs: [{ paddr: RAM, data: new Uint8Array(4) }] }), r, { name: 'x.bin' }).format, 'elf', 'the ELF magic wins in auto');
});

test('auto: no ELF magic and no .bin name says how to load a raw binary', () => {
  expectImageError(() => loadImage(new Uint8Array([1, 2, 3, 4, 5]), ram(), { name: 'guest.elf' }), /not an ELF file: it starts with 01 02 03 04.*raw binary at 0x80000000.*\.bin/);
  expectImageError(() => loadImage(new Uint8Array([1, 2, 3, 4, 5]), ram(), { name: 'guest.elf', format: 'elf' }), /not an ELF file/);
});

test('an empty file', () => {
  expectImageError(() => loadImage(new Uint8Array(0), ram(), { name: 'guest.elf' }), /empty \(0 bytes\)/);
  expectImageError(() => loadImage(new Uint8Array(0), ram(), { name: 'guest.bin' }), /empty/, 'guest.bin');
});

test('a 64-bit ELF', () => {
  expectImageError(() => loadImage(elf({ cls: 2, segs: [] }), ram(), { name: 'guest.elf' }), /tern runs RV32 images; this is ELF64/);
});

test('a big-endian ELF', () => {
  expectImageError(() => loadImage(elf({ data: 2, segs: [] }), ram(), { name: 'guest.elf' }), /big-endian/);
});

test('the wrong machine is named', () => {
  expectImageError(() => loadImage(elf({ machine: 62, segs: [] }), ram(), { name: 'guest.elf' }), /built for x86-64 \(e_machine 62\), not RISC-V/);
  expectImageError(() => loadImage(elf({ machine: 183, segs: [] }), ram(), { name: 'guest.elf' }), /AArch64/);
  expectImageError(() => loadImage(elf({ machine: 999, segs: [] }), ram(), { name: 'guest.elf' }), /unknown machine \(e_machine 999\)/);
});

test('not an executable', () => {
  expectImageError(() => loadImage(elf({ type: 1, segs: [] }), ram(), { name: 'guest.elf' }), /not an executable: e_type 1 \(ET_REL/);
  expectImageError(() => loadImage(elf({ type: 3, segs: [] }), ram(), { name: 'guest.elf' }), /ET_DYN/);
});

test('a truncated header', () => {
  const full = elf({ segs: [{ paddr: RAM, data: new Uint8Array(4) }] });
  expectImageError(() => loadImage(full.subarray(0, 30), ram(), { name: 'guest.elf' }), /truncated ELF header: the file is 30 bytes, an ELF32 header needs 52/);
  expectImageError(() => loadImage(full.subarray(0, 4), ram(), { name: 'guest.elf' }), /truncated ELF header: the file is 4 bytes/);
});

test('truncated program headers', () => {
  const img = elf({ segs: [{ paddr: RAM, data: new Uint8Array(0) }, { paddr: RAM + 16, data: new Uint8Array(0) }] });
  expectImageError(() => loadImage(img.subarray(0, 52 + 40), ram(), { name: 'guest.elf' }), /truncated program headers: 2 entries of 32 bytes at offset 52 end at 116, but the file is 92 bytes/);
  expectImageError(() => loadImage(elf({ phoff: 0xffff_fff0, segs: [] }).subarray(0, 60), ram(), { name: 'guest.elf' }), /no program headers|truncated program headers/);
  expectImageError(() => loadImage(elf({ phentsize: 56, segs: [{ paddr: RAM, data: new Uint8Array(4) }] }), ram(), { name: 'guest.elf' }), /entry size is 56 bytes/);
});

test('a truncated segment', () => {
  const img = elf({ segs: [{ paddr: RAM, data: new Uint8Array(100) }] });
  expectImageError(() => loadImage(img.subarray(0, img.length - 10), ram(), { name: 'guest.elf' }), /truncated segment 0 .*100 file bytes at offset 84 end at 184, but the file is 174 bytes/);
  const huge = elf({ segs: [{ paddr: RAM, data: new Uint8Array(4), offset: 0xffff_fff0, filesz: 0x100, memsz: 0x100 }] });
  expectImageError(() => loadImage(huge, ram(), { name: 'guest.elf' }), /truncated segment 0/);
  const fileBigger = elf({ segs: [{ paddr: RAM, data: new Uint8Array(8), memsz: 4 }] });
  expectImageError(() => loadImage(fileBigger, ram(), { name: 'guest.elf' }), /file size of 8 bytes, larger than its memory size of 4/);
});

test('a segment outside RAM', () => {
  expectImageError(() => loadImage(elf({ segs: [{ paddr: 0x1000, data: new Uint8Array(4) }] }), ram(), { name: 'guest.elf' }), /spans 0x1000\.\.0x1004, outside RAM/);
  expectImageError(
    () => loadImage(elf({ segs: [{ paddr: 0xffff_f000, data: new Uint8Array(4), memsz: 0x2000 }] }), ram(), { name: 'guest.elf' }),
    /outside RAM/,
  );
});

test('a segment that does not fit in the configured RAM size', () => {
  const img = elf({ segs: [{ paddr: RAM + 0x1f_f000, data: new Uint8Array(4), memsz: 0x2000 }] });
  expectImageError(() => loadImage(img, ram(2), { name: 'guest.elf' }), /spans 0x801ff000\.\.0x80201000 and does not fit in the configured RAM of 2097152 bytes \(2 MiB, 0x80000000\.\.0x80200000\); it needs at least 2\.00 MiB/);
  assert.equal(loadImage(img, ram(3), { name: 'guest.elf' }).highAddr, RAM + 0x20_1000);
  expectImageError(() => loadImage(new Uint8Array(2 * MiB + 1), ram(2), { name: 'big.bin' }), /raw image of 2097153 bytes does not fit in the configured RAM of 2097152 bytes/, 'big.bin');
});

test('overlapping segments, no loadable segment, an entry outside RAM', () => {
  const overlap = elf({ segs: [{ paddr: RAM, data: new Uint8Array(16) }, { paddr: RAM + 8, data: new Uint8Array(16) }] });
  expectImageError(() => loadImage(overlap, ram(), { name: 'guest.elf' }), /segments 0 \(0x80000000\.\.0x80000010\) and 1 \(0x80000008\.\.0x80000018\) overlap/);
  expectImageError(() => loadImage(elf({ segs: [{ type: 4, paddr: 0, data: new Uint8Array(4) }] }), ram(), { name: 'guest.elf' }), /no PT_LOAD segment/);
  expectImageError(() => loadImage(elf({ segs: [] }), ram(), { name: 'guest.elf' }), /no program headers/);
  expectImageError(() => loadImage(elf({ entry: 0x1000, segs: [{ paddr: RAM, data: new Uint8Array(4) }] }), ram(), { name: 'guest.elf' }), /entry point 0x1000 is outside RAM/);
});

test('nothing is copied when validation fails', () => {
  const r = ram();
  const img = elf({ segs: [{ paddr: RAM, data: new Uint8Array([1, 2, 3, 4]) }, { paddr: 0x10, data: new Uint8Array(4) }] });
  assert.throws(() => loadImage(img, r, { name: 'guest.elf' }), ImageError);
  assert.deepEqual([...r.u8.subarray(0, 4)], [0, 0, 0, 0]);
});

test('no malformed header field makes the loader throw anything but ImageError', () => {
  const base = elf({ entry: RAM, segs: [{ paddr: RAM, data: new Uint8Array(32), memsz: 64 }, { paddr: RAM + 0x100, data: new Uint8Array(8) }] });
  let seed = 12345;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0);
  const r = ram();
  for (let i = 0; i < 2000; i++) {
    const img = base.slice(0, rnd() % 3 === 0 ? rnd() % base.length : base.length);
    for (let k = 0; k < 3; k++) if (img.length > 0) img[rnd() % Math.min(img.length, 120)] = rnd() & 0xff;
    try {
      loadImage(img, r, { name: 'fuzz.elf', format: 'elf' });
    } catch (e) {
      assert.ok(e instanceof ImageError, `iteration ${i}: ${String(e)}`);
    }
  }
});
