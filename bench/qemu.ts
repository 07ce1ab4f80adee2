import { spawn } from 'node:child_process';

/** Where QEMU's RV32 system emulator is expected (Debian's qemu-system-misc). */
export const QEMU = process.env.TERN_QEMU ?? 'qemu-system-riscv32';

export interface QemuRun {
  readonly output: string;
  readonly exitCode: number | null;
  readonly timedOut: boolean;
  readonly seconds: number;
}

/** Runs an image on QEMU's virt board exactly as the README says, capturing the console. */
export function runOnQemu(image: string, opts: { mem: string; append: string; timeoutMs: number }): Promise<QemuRun> {
  const args = ['-M', 'virt', '-bios', 'none', '-kernel', image, '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-m', opts.mem];
  if (opts.append !== '') args.push('-append', opts.append);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${QEMU}: ${e.message} (install Debian's qemu-system-misc)`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (!timedOut && code !== 0 && stderr.trim() !== '' && chunks.length === 0) {
        reject(new Error(`${QEMU} failed: ${stderr.trim()}`));
        return;
      }
      resolve({ output: Buffer.concat(chunks).toString('latin1'), exitCode: code, timedOut, seconds: (performance.now() - started) / 1000 });
    });
  });
}
