import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../helpers/rv32asm.js';
import { StopReason } from '../../src/machine/cpu/hart.js';
import { RAM, RecordingDevice, rig } from './harness.js';

/** A guest polling a device register forever: lw from MMIO, then jump back (as a timer poll does). */
function poller(): ReturnType<typeof rig> {
  const r = rig();
  r.bus.map(0x1000_0000, 0x100, new RecordingDevice());
  r.load([A.lw(5, 1, 0), A.addi(6, 6, 1), A.jal(0, -8)]);
  r.hart.x[1] = 0x1000_0000;
  return r;
}

test('the stop signal ends run() right after the next slow-path instruction, and the guest goes on from there', () => {
  const r = poller();
  const word = new Int32Array(new SharedArrayBuffer(8));
  r.hart.setStopSignal(word, 1, 7);
  word[1] = 7; // "Run": the slice runs its whole budget
  assert.equal(r.run(3000), StopReason.Budget);
  assert.equal(r.hart.budgetUsed, 3000);
  word[1] = 8; // "Pause": the next MMIO load ends it
  assert.equal(r.hart.getPc(), RAM, 'the first run ended at the loop head (3000 = 1000 x 3)');
  assert.equal(r.run(3000), StopReason.Budget);
  assert.equal(r.hart.budgetUsed, 1, 'only the MMIO load ran');
  assert.equal(r.hart.getPc(), RAM + 4, 'the load completed; the pc is past it');
  word[1] = 7;
  const before = r.hart.x[6]!;
  assert.equal(r.run(300), StopReason.Budget);
  assert.equal(r.hart.budgetUsed, 300);
  assert.equal(r.hart.x[6]! - before, 100, 'the loop went on where it stopped: one increment per three instructions');
  assert.equal(r.hart.getPc(), RAM + 4);
});
