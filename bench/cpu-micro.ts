// Micro benchmark of the hart's interpreter loop: node dist/bench/cpu-micro.js
// A loop of adds, a mul, loads, stores and a branch over a 4 KiB buffer, run in budget slices
// like the vCPU worker does. Reports guest MIPS with the dirty log off and on.
import { Bus } from '../src/machine/bus.js';
import { GuestRam } from '../src/machine/memory/ram.js';
import { Hart } from '../src/machine/cpu/hart.js';
import * as A from '../test/helpers/rv32asm.js';

const RAM = 0x8000_0000;
const ram = GuestRam.allocate(16 << 20);
const bus = new Bus(ram);
const hart = new Hart(bus, { ticks: () => 0 });

// s0 = buffer base, t0 = index (bytes), t1 = accumulator, t2 = multiplier
const prog = [
  ...A.li(8, RAM + 0x10000), // s0
  A.addi(5, 0, 0), // t0 = 0
  A.addi(6, 0, 1), // t1 = 1
  A.addi(7, 0, 3), // t2 = 3
  // loop:
  A.add(28, 8, 5), // t3 = s0 + t0
  A.lw(29, 28, 0), // t4 = [t3]
  A.add(6, 6, 29), // t1 += t4
  A.mul(30, 6, 7), // t5 = t1 * 3
  A.xor(6, 6, 30), // t1 ^= t5
  A.sw(6, 28, 0), // [t3] = t1
  A.lbu(29, 28, 1), // t4 = byte
  A.addi(6, 6, 1),
  A.sh(29, 28, 2),
  A.addi(5, 5, 4), // t0 += 4
  A.andi(5, 5, 0x7fc), // wrap in 2 KiB
  A.bne(0, 0, 8), // never taken
  A.jal(0, -48), // back to loop
];
// A second workload at RAM + 0x1000: a call to a byte-copy routine (lbu/sb/bltu) and a return.
const prog2 = [
  ...A.li(8, RAM + 0x20000), // s0 = src
  ...A.li(9, RAM + 0x21000), // s1 = dst
  // outer (8):
  A.mv(10, 8), // a0 = src
  A.mv(11, 9), // a1 = dst
  A.addi(12, 0, 256), // a2 = n
  A.jal(1, 12), // call copy (at +12)
  A.addi(20, 20, 1),
  A.jal(0, -20), // outer
  // copy:
  A.add(13, 10, 12), // a3 = end
  A.lbu(14, 10, 0),
  A.sb(14, 11, 0),
  A.addi(10, 10, 1),
  A.addi(11, 11, 1),
  A.bltu(10, 13, -16),
  A.jalr(0, 1, 0),
];
function place(p: Array<number | number[]>, at: number): void {
  const w = p.flat();
  for (let i = 0; i < w.length; i++) ram.i32[(at >>> 2) + i] = w[i]! | 0;
}
place(prog, 0);
place(prog2, 0x1000);

function measure(label: string, dirty: boolean, seconds: number, entry = RAM, presence = false): number {
  hart.reset(entry, 0, 0);
  hart.dirtyLogOn = dirty;
  hart.presenceOn = presence; // every page is present: measures the cost of the checks only
  const slice = 100_000;
  const start = performance.now();
  let n = 0;
  let best = 0;
  let t0 = start;
  let n0 = 0;
  while (performance.now() - start < seconds * 1000) {
    for (let k = 0; k < 20; k++) hart.run(slice);
    n += 20 * slice;
    const t = performance.now();
    if (t - t0 > 200) {
      best = Math.max(best, (n - n0) / ((t - t0) * 1000));
      t0 = t;
      n0 = n;
    }
  }
  const mips = n / ((performance.now() - start) * 1000);
  console.log(`${label}: ${mips.toFixed(1)} MIPS average, ${best.toFixed(1)} MIPS best 200 ms window (instret ${hart.instret})`);
  return mips;
}

const secs = Number(process.argv[2] ?? 3);
measure('warm-up', false, 1);
measure('dirty log off', false, secs);
measure('presence checks on (post-copy), dirty log on', true, secs, RAM, true);
measure('copy loop, dirty log off', false, secs, RAM + 0x1000);
measure('copy loop, dirty log on ', true, secs, RAM + 0x1000);
measure('dirty log on ', true, secs);
measure('dirty log off', false, secs);
