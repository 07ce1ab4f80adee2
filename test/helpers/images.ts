import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The committed guest images (tests run from dist/test/..., sources live at the repo root). */
export const IMAGES_DIR = fileURLToPath(new URL('../../../guests/images/', import.meta.url));

export function imagePath(name: string): string {
  return IMAGES_DIR + name + '.elf';
}

export function imageBytes(name: string): Uint8Array {
  return new Uint8Array(readFileSync(imagePath(name)));
}

export function text(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('latin1');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 10 ms until it holds or `timeoutMs` passes; returns whether it held. */
export async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(10);
  }
  return cond();
}

/**
 * munch's status lines in a console snapshot, complete ones only: a guest prints a line in
 * several pieces, and a snapshot can end between them (a post-copy guest may even wait on a
 * page between two pieces), so the text after the last newline is not a line yet.
 */
export function munchLines(console: string): string[] {
  const end = console.lastIndexOf('\n');
  return console.slice(0, end + 1).split('\n').filter((l) => l.startsWith('munch: t='));
}
