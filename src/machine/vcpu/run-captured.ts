import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { GuestRam } from '../memory/ram.js';
import { Vcpu } from './vcpu.js';

export interface CapturedRun {
  readonly output: string;
  /** The guest's exit code, or undefined when it was still running at the time limit. */
  readonly exitCode: number | undefined;
  readonly instructions: number;
  readonly seconds: number;
}

/**
 * Boots an image in a vCPU thread and collects its console until it powers off or `timeoutMs`
 * passes (then the VM is stopped). Used by tests and benchmarks.
 */
export async function runCaptured(imagePath: string, opts: { memBytes: number; append: string; timeoutMs: number }): Promise<CapturedRun> {
  const image = new Uint8Array(await readFile(imagePath));
  const ram = GuestRam.allocate(opts.memBytes);
  const started = performance.now();
  const vcpu = await Vcpu.start({ ram, name: basename(imagePath), start: { kind: 'boot', boot: { image, imageName: imagePath, bootargs: opts.append } } });
  const chunks: Uint8Array[] = [];
  vcpu.on('console', (d) => chunks.push(d));
  try {
    const exitCode = await new Promise<number | undefined>((resolve, reject) => {
      const timer = setTimeout(() => resolve(undefined), opts.timeoutMs);
      vcpu.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
      vcpu.once('crash', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    if (exitCode === undefined) await vcpu.pause();
    const seconds = (performance.now() - started) / 1000;
    const stats = await vcpu.stats();
    // Output flushed at pause/exit arrives as messages; let them land.
    await new Promise((r) => setImmediate(r));
    return { output: Buffer.concat(chunks).toString('latin1'), exitCode, instructions: stats.instret, seconds };
  } finally {
    await vcpu.stop();
  }
}
