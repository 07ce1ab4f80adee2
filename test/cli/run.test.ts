import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { tern } from '../helpers/cli.js';
import { imagePath } from '../helpers/images.js';

const dir = mkdtempSync(join(tmpdir(), 'tern-cli-'));

test('tern run prints the console and exits with the guest code', async () => {
  const r = await tern(['run', imagePath('hello'), '--append', 'who=cli']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Hello from a tern guest/);
  assert.match(r.stdout, /who=cli/);
});

test('a guest failure code through sifive_test becomes the exit code', async () => {
  // verify refuses an unknown boot argument with exit 2 (guests/README.md).
  const r = await tern(['run', imagePath('verify'), '--append', 'nonsense=1']);
  assert.equal(r.code, 2);
});

test('--json reports instructions and MIPS on stderr', async () => {
  const r = await tern(['run', imagePath('hello'), '--json']);
  assert.equal(r.code, 0);
  const j = JSON.parse(r.stderr.trim().split('\n').pop()!) as { exitCode: number; instructions: number; mips: number };
  assert.equal(j.exitCode, 0);
  assert.ok(j.instructions > 1000);
});

test('--timeout stops a guest that runs forever with 124', async () => {
  const r = await tern(['run', imagePath('verify'), '--mem', '32M', '--append', 'region=1M', '--timeout', '1s']);
  assert.equal(r.code, 124);
  assert.match(r.stdout, /^AB/);
});

const bad: Array<[string, Uint8Array | string, RegExp]> = [
  ['not-elf.img', 'hello, not an image', /not an ELF/i],
  ['empty.elf', new Uint8Array(0), /empty/i],
  ['truncated.elf', readFileSync(imagePath('hello')).subarray(0, 40), /truncated/i],
  ['elf64.elf', (() => { const b = readFileSync(imagePath('hello')).subarray(0, 64); const c = Buffer.from(b); c[4] = 2; return c; })(), /ELF64|64-bit/],
];
for (const [name, bytes, message] of bad) {
  test(`a bad image (${name}) gets a clear error and exit code 2`, async () => {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    const r = await tern(['run', p]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.match(r.stderr, new RegExp(name.replace('.', '\\.')));
    assert.doesNotMatch(r.stderr, /internal error|at .*\.js:/, 'no stack trace for a user error');
  });
}

test('an image that does not fit in RAM is refused with exit 2', async () => {
  const r = await tern(['run', imagePath('hello'), '--mem', '1M']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /RAM|memory|fit/i);
});

test('bad options are usage errors with exit 2', async () => {
  for (const args of [['run', imagePath('hello'), '--mem', 'lots'], ['run', imagePath('hello'), '--mem', '3G'], ['run', join(dir, 'missing.elf')]]) {
    const r = await tern(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^tern: /);
  }
});

test('--help explains the command', async () => {
  const r = await tern(['run', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /--append/);
  assert.match(r.stdout, /qemu-system-riscv32/);
});
