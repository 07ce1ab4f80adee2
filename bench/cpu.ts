// npm run bench:cpu — guest speed of tern against QEMU on the same images, in one run.
// Not a test: figures depend on the machine. Prints a table and, with --json, one JSON object.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { GuestRam } from '../src/machine/memory/ram.js';
import { runCaptured } from '../src/machine/vcpu/run-captured.js';
import { Vcpu } from '../src/machine/vcpu/vcpu.js';
import { runOnQemu } from './qemu.js';

const images = fileURLToPath(new URL('../../guests/images/', import.meta.url));
const json = process.argv.includes('--json');
const MEM = 256 * 1024 * 1024;
const COMPUTE_ARGS = process.env.BENCH_COMPUTE_ARGS ?? 'timing=1';

function log(s: string): void {
  if (!json) process.stdout.write(s + '\n');
}

/** compute prints `ticks=T instret=I` for its timed kernel when timing=1. */
function parseTiming(out: string): { ticks: number; instret: number } | undefined {
  const t = /ticks=(\d+)/.exec(out);
  const i = /minstret-delta=(\d+)/.exec(out);
  if (t === null) return undefined;
  return { ticks: Number(t[1]), instret: i === null ? NaN : Number(i[1]) };
}

function digest(out: string): string {
  return out.split('\n').filter((l) => !/ticks=/.test(l)).join('\n').trim();
}

async function computeBench(): Promise<Record<string, number | string | boolean>> {
  const image = images + 'compute.elf';
  const tern = await runCaptured(image, { memBytes: MEM, append: COMPUTE_ARGS, timeoutMs: 600_000 });
  const qemu = await runOnQemu(image, { mem: '256M', append: COMPUTE_ARGS, timeoutMs: 600_000 });
  const tt = parseTiming(tern.output);
  const qt = parseTiming(qemu.output);
  if (tt === undefined || qt === undefined) throw new Error(`compute did not print its timing line:\ntern: ${tern.output}\nqemu: ${qemu.output}`);
  // The kernel's instruction count is deterministic: tern's retired-instruction counter gives it exactly.
  const insns = tt.instret;
  const ternMips = insns / (tt.ticks / 1e7) / 1e6;
  const qemuMips = insns / (qt.ticks / 1e7) / 1e6;
  const same = digest(tern.output) === digest(qemu.output);
  log(`compute (${COMPUTE_ARGS}): ${insns.toLocaleString()} instructions in the timed kernel`);
  log(`  tern  ${ternMips.toFixed(1).padStart(8)} MIPS   (${(tt.ticks / 1e7).toFixed(3)} s guest time, whole run ${tern.instructions.toLocaleString()} insns in ${tern.seconds.toFixed(2)} s wall)`);
  log(`  qemu  ${qemuMips.toFixed(1).padStart(8)} MIPS   (${(qt.ticks / 1e7).toFixed(3)} s guest time)`);
  log(`  tern/qemu ${(ternMips / qemuMips).toFixed(3)}   same digest: ${same}`);
  return { ternMips, qemuMips, ratio: ternMips / qemuMips, sameOutput: same, instructions: insns };
}

/** verify's pass rate over a fixed window on both, converted to MIPS with tern's instructions per pass. */
async function verifyBench(): Promise<Record<string, number>> {
  const image = images + 'verify.elf';
  const append = 'region=32M mark=1';
  const windowMs = 8000;
  const tern = await runCaptured(image, { memBytes: MEM, append, timeoutMs: windowMs });
  const qemu = await runOnQemu(image, { mem: '256M', append, timeoutMs: windowMs });
  const tb = (tern.output.match(/B/g) ?? []).length;
  const qb = (qemu.output.match(/B/g) ?? []).length;
  const insnsPerPass = tb > 0 ? tern.instructions / tb : NaN;
  const ternMips = tern.instructions / tern.seconds / 1e6;
  const qemuMips = (qb * insnsPerPass) / qemu.seconds / 1e6;
  log(`verify (${append}, ${windowMs / 1000} s window; includes start-up):`);
  log(`  tern  ${tb} passes  ${ternMips.toFixed(1).padStart(8)} MIPS`);
  log(`  qemu  ${qb} passes  ${qemuMips.toFixed(1).padStart(8)} MIPS (instructions per pass from tern)`);
  log(`  tern/qemu ${(ternMips / qemuMips).toFixed(3)}`);
  return { ternPasses: tb, qemuPasses: qb, ternMips, qemuMips, ratio: ternMips / qemuMips };
}

/** Throttling: the vCPU sleeps the given share of wall time; guest MIPS should drop in proportion. */
async function throttle(): Promise<Record<string, number>> {
  const image = new Uint8Array(await readFile(images + 'compute.elf'));
  const out: Record<string, number> = {};
  for (const pct of [0, 50, 80]) {
    const ram = GuestRam.allocate(MEM);
    const vcpu = await Vcpu.start({ ram, running: false, start: { kind: 'boot', boot: { image, imageName: 'compute.elf', bootargs: 'iters=5 timing=1' } } });
    const chunks: Uint8Array[] = [];
    vcpu.on('console', (d) => chunks.push(d));
    vcpu.setThrottle(pct);
    const done = new Promise<void>((r) => vcpu.once('exit', () => r()));
    vcpu.resume();
    await done;
    await vcpu.stop();
    const t = parseTiming(Buffer.concat(chunks).toString('latin1'));
    if (t === undefined) throw new Error('compute printed no timing');
    out[`mips${pct}`] = t.instret / (t.ticks / 1e7) / 1e6;
  }
  log(`throttle: 0% ${out.mips0!.toFixed(1)} MIPS, 50% ${out.mips50!.toFixed(1)} MIPS (x${(out.mips50! / out.mips0!).toFixed(2)}), 80% ${out.mips80!.toFixed(1)} MIPS (x${(out.mips80! / out.mips0!).toFixed(2)})`);
  return out;
}

/**
 * Guest speed with the dirty log off vs on, in alternating windows on one running guest (same
 * thread, same compiled code), so host noise hits both sides alike. While on, the host syncs
 * every 10 ms as a pre-copy round would. verify stores to every page of its region each pass.
 */
async function dirtyLogCost(): Promise<Record<string, number>> {
  const image = new Uint8Array(await readFile(images + 'verify.elf'));
  const ram = GuestRam.allocate(MEM);
  const vcpu = await Vcpu.start({ ram, start: { kind: 'boot', boot: { image, imageName: 'verify.elf', bootargs: 'region=8M' } } });
  await new Promise((r) => setTimeout(r, 500));
  const off: number[] = [];
  const on: number[] = [];
  for (let w = 0; w < 12; w++) {
    const logging = w % 2 === 1;
    await vcpu.setDirtyLogging(logging);
    const timer = logging ? setInterval(() => ram.dirty.sync(), 10) : undefined;
    const s0 = await vcpu.stats();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 400));
    const s1 = await vcpu.stats();
    const mips = (s1.instret - s0.instret) / ((performance.now() - t0) * 1000);
    if (timer) clearInterval(timer);
    (logging ? on : off).push(mips);
  }
  await vcpu.stop();
  const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const cost = 1 - median(on) / median(off);
  log(`dirty log (verify region=8M, 6+6 alternating 400 ms windows): off median ${median(off).toFixed(1)} MIPS, on (sync every 10 ms) median ${median(on).toFixed(1)} MIPS -> cost ${(cost * 100).toFixed(1)}%`);
  return { offMips: median(off), onMips: median(on), costPercent: cost * 100 };
}

/** How long pause() takes to return, with the guest busy (verify) and idle-sleeping (hello-like wfi). */
async function pauseLatency(): Promise<Record<string, number>> {
  const image = new Uint8Array(await readFile(images + 'verify.elf'));
  const ram = GuestRam.allocate(MEM);
  const vcpu = await Vcpu.start({ ram, start: { kind: 'boot', boot: { image, imageName: 'verify.elf', bootargs: 'region=32M' } } });
  await new Promise((r) => setTimeout(r, 300));
  const samples: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    await vcpu.pause();
    samples.push(performance.now() - t0);
    vcpu.resume();
    await new Promise((r) => setTimeout(r, 5));
  }
  await vcpu.stop();
  samples.sort((a, b) => a - b);
  const q = (p: number): number => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]!;
  log(`pause latency (verify running, 200 pauses): p50 ${q(0.5).toFixed(3)} ms  p99 ${q(0.99).toFixed(3)} ms  max ${samples[samples.length - 1]!.toFixed(3)} ms`);
  return { p50Ms: q(0.5), p99Ms: q(0.99), maxMs: samples[samples.length - 1]! };
}

// --only compute|verify|dirtyLog|pause|throttle runs one section.
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt > 0 ? process.argv[onlyAt + 1] : undefined;
const sections: Record<string, () => Promise<Record<string, unknown>>> = {
  compute: computeBench,
  verify: verifyBench,
  dirtyLog: dirtyLogCost,
  pause: pauseLatency,
  throttle,
};
if (only !== undefined && !(only in sections)) {
  process.stderr.write(`bench:cpu: --only takes one of ${Object.keys(sections).join(', ')}\n`);
  process.exit(2);
}
const result: Record<string, unknown> = {};
log('tern bench:cpu — tern vs QEMU (qemu-system-riscv32, TCG) on the same images, this run');
for (const [name, run] of Object.entries(sections)) {
  if (only === undefined || only === name) result[name] = await run();
}
if (json) process.stdout.write(JSON.stringify(result) + '\n');
