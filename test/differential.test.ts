// Every guest image runs on tern and on the real QEMU (qemu-system-riscv32 -M virt) with the same
// console output: exactly, for images that power off; the same prefix, for ones that run forever.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { runOnQemu } from '../bench/qemu.js';
import { runCaptured } from '../src/machine/vcpu/run-captured.js';
import { IMAGES_DIR, imagePath } from './helpers/images.js';

const MiB = 1024 * 1024;

interface Case {
  readonly image: string;
  readonly append: string;
  readonly mem: number;
  /** 'exact' for images that power off; 'prefix' for ones that run forever (compared over the shorter output). */
  readonly compare: 'exact' | 'prefix';
  readonly seconds: number;
  /** Lines that carry timing and are removed from both sides before comparing (none for exact images). */
  readonly mask?: RegExp;
}

const cases: Case[] = [
  { image: 'hello', append: 'greeting=hi n=42', mem: 256, compare: 'exact', seconds: 60 },
  { image: 'hello', append: '', mem: 64, compare: 'exact', seconds: 60 },
  { image: 'selftest', append: '', mem: 256, compare: 'exact', seconds: 120 },
  { image: 'selftest', append: '', mem: 64, compare: 'exact', seconds: 120 },
  { image: 'compute', append: 'iters=2', mem: 128, compare: 'exact', seconds: 120 },
  { image: 'verify', append: 'region=16M', mem: 64, compare: 'prefix', seconds: 4 },
  // munch's first line is its configuration; status lines carry guest-time figures.
  { image: 'munch', append: 'wws=1M rate=2M rss=1M report=500ms', mem: 32, compare: 'prefix', seconds: 3, mask: /^munch: t=.*$/gm },
  // The vsock services, on boards without a vsock device (QEMU here has no vhost-vsock): both refuse alike.
  { image: 'kv', append: '', mem: 64, compare: 'prefix', seconds: 10 },
  { image: 'http', append: '', mem: 64, compare: 'prefix', seconds: 10 },
  { image: 'tick', append: '', mem: 64, compare: 'prefix', seconds: 10 },
  // crowd's assist channel needs vsock: both refuse alike; without it, its tasks run alike
  // (status lines carry guest-time progress counts).
  { image: 'crowd', append: '', mem: 64, compare: 'prefix', seconds: 10 },
  { image: 'crowd', append: 'assist=off', mem: 64, compare: 'prefix', seconds: 4, mask: /^crowd: t=.*$/gm },
];

test('every committed image has a differential case', () => {
  const images = readdirSync(IMAGES_DIR).filter((f) => f.endsWith('.elf')).map((f) => f.replace(/\.elf$/, ''));
  for (const img of images) assert.ok(cases.some((c) => c.image === img), `no differential case for ${img}`);
});

/** The first line where tern's and QEMU's output differ, with its neighbours (a CI run once saw 2 bytes differ). */
function firstDifference(tern: string, qemu: string): string {
  const a = tern.split('\n');
  const b = qemu.split('\n');
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const show = (lines: string[]): string => JSON.stringify(lines.slice(Math.max(0, i - 1), i + 2));
  return `line ${i + 1} differs: tern ${show(a)}, qemu ${show(b)} (${a.length} and ${b.length} lines)`;
}

for (const c of cases) {
  test(`${c.image} ${c.append || '(no args)'} -m ${c.mem}M: tern and QEMU print the same`, async () => {
    const timeoutMs = c.seconds * 1000;
    const [tern, qemu] = await Promise.all([
      runCaptured(imagePath(c.image), { memBytes: c.mem * MiB, append: c.append, timeoutMs }),
      runOnQemu(imagePath(c.image), { mem: `${c.mem}M`, append: c.append, timeoutMs }),
    ]);
    let t = tern.output;
    let q = qemu.output;
    if (c.mask) {
      t = t.replace(c.mask, '');
      q = q.replace(c.mask, '');
    }
    if (c.compare === 'exact') {
      // A guest's self-checks print FAIL lines before it exits 1: name them (one CI run saw QEMU's
      // selftest exit 1 and said no more).
      const failed = (out: string): string => out.split('\n').filter((l) => l.startsWith('FAIL')).join('; ') || out.slice(-300);
      assert.equal(tern.exitCode, 0, `tern: guest exited with ${tern.exitCode}: ${failed(tern.output)}`);
      assert.equal(qemu.exitCode, 0, `qemu: exit ${qemu.exitCode}: ${failed(qemu.output)}`);
      assert.equal(t, q, firstDifference(t, q));
    } else {
      const n = Math.min(t.length, q.length);
      assert.ok(n >= 2, `both printed something (tern ${t.length} bytes, qemu ${q.length} bytes)`);
      assert.equal(t.slice(0, n), q.slice(0, n));
      assert.doesNotMatch(t, /X/);
    }
  });
}
