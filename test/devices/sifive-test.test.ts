import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SifiveTest } from '../../src/machine/devices/sifive-test.js';
import { StateFormatError } from '../../src/machine/state/codec.js';
import { restore, save } from './helpers.js';

function setup() {
  const exits: Array<[number, boolean]> = [];
  const dev = new SifiveTest({ requestExit: (code: number, reset = false) => void exits.push([code, reset]) });
  return { dev, exits };
}

test('0x5555 powers off with exit code 0', () => {
  const { dev, exits } = setup();
  dev.write(0, 4, 0x5555);
  assert.deepEqual(exits, [[0, false]]);
});

test('0x3333 fails with the code in the high 16 bits', () => {
  const { dev, exits } = setup();
  dev.write(0, 4, (42 << 16) | 0x3333);
  dev.write(0, 4, 0xffff3333);
  assert.deepEqual(exits, [
    [42, false],
    [0xffff, false],
  ]);
});

test('0x7777 asks for a reset', () => {
  const { dev, exits } = setup();
  dev.write(0, 4, 0x7777);
  assert.deepEqual(exits, [[0, true]]);
});

test('other values, other offsets and narrow writes are ignored; reads return 0', () => {
  const { dev, exits } = setup();
  dev.write(0, 4, 0x1234);
  dev.write(0, 4, 0x5556);
  dev.write(4, 4, 0x5555);
  dev.write(0, 2, 0x5555);
  dev.write(0, 1, 0x55);
  assert.deepEqual(exits, []);
  assert.equal(dev.read(0, 4), 0);
});

test('state is an empty section; unknown versions and trailing bytes are refused', () => {
  const { dev } = setup();
  const state = save(dev);
  assert.equal(state.length, 0);
  restore(setup().dev, state);
  assert.throws(() => restore(setup().dev, new Uint8Array([0])), StateFormatError);
  assert.throws(() => restore(setup().dev, state, 2), StateFormatError);
});
