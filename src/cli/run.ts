import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parseDeviceSpecs, type VirtioDeviceSpec } from '../machine/devices/virtio/device-spec.js';
import { DEFAULT_RAM_BYTES } from '../machine/memory/layout.js';
import { GuestRam } from '../machine/memory/ram.js';
import { Vcpu } from '../machine/vcpu/vcpu.js';
import { UsageError, parseDuration, parseSize } from './units.js';

interface RunOptions {
  mem: string;
  append: string;
  raw?: boolean;
  timeout?: string;
  json?: boolean;
  device?: string[];
}

/** `--device vsock[,cid=N]` or `--device balloon`, as QEMU's -device vhost-vsock-device / virtio-balloon-device. */
export function parseRunDevices(values: readonly string[]): VirtioDeviceSpec[] {
  const list = values.map((v) => {
    const [name, ...params] = v.split(',');
    if (name === 'balloon' && params.length === 0) return { kind: 'virtio-balloon' };
    if (name === 'vsock') {
      const spec: { kind: string; guestCid?: number } = { kind: 'virtio-vsock' };
      for (const p of params) {
        const m = /^cid=(\d+)$/.exec(p);
        if (m === null) throw new UsageError(`--device ${v}: unknown parameter '${p}' (vsock takes cid=N)`);
        spec.guestCid = Number(m[1]);
      }
      return spec;
    }
    throw new UsageError(`--device ${v}: unknown device (known: vsock[,cid=N], balloon)`);
  });
  try {
    return parseDeviceSpecs(list);
  } catch (e) {
    throw new UsageError(`--device: ${(e as Error).message}`);
  }
}

/** Exit code when --timeout ends a guest that did not power off (as timeout(1) does). */
export const TIMEOUT_EXIT = 124;

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run a guest image on this host in the foreground: its console on stdout, its exit code as ours')
    .argument('<image>', 'RV32 ELF image (or a raw binary with --raw or a .bin name), e.g. guests/images/hello.elf')
    .option('-m, --mem <size>', 'guest RAM: 256M, 1G, or a bare number of MiB as QEMU -m', `${DEFAULT_RAM_BYTES / 1024 / 1024}M`)
    .option('-a, --append <args>', 'kernel command line, placed in the device tree at /chosen/bootargs (QEMU -append)', '')
    .option('--raw', 'load the image as a raw binary at the RAM base (0x80000000)')
    .option('--timeout <duration>', `stop a guest that has not powered off after this long (exit code ${TIMEOUT_EXIT})`)
    .option('--json', 'after the guest stops, print a JSON summary (exit code, instructions, seconds, MIPS) to stderr')
    .option('--device <device>', 'add a virtio-mmio device: vsock[,cid=N] (default cid 3) or balloon; repeatable, the first takes the top slot', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .addHelpText('after', `
The image runs unchanged on QEMU too:
  qemu-system-riscv32 -M virt -bios none -kernel IMAGE -display none -monitor none -serial stdio -m SIZE -append ARGS
With --device, add -global virtio-mmio.force-legacy=false and, in the same order,
  -device vhost-vsock-device,guest-cid=N  /  -device virtio-balloon-device

Exit codes: the guest's own (sifive_test: 0x5555 -> 0, 0x3333|code<<16 -> code),
2 for a bad image or bad options, ${TIMEOUT_EXIT} when --timeout ends the guest, 70 if the emulator fails.`)
    .action(async (image: string, opts: RunOptions) => {
      process.exitCode = await runImage(image, opts);
    });
}

async function runImage(imagePath: string, opts: RunOptions): Promise<number> {
  const mem = parseSize(opts.mem, '--mem', true);
  const timeoutMs = opts.timeout !== undefined ? parseDuration(opts.timeout, '--timeout') : undefined;
  const devices = parseRunDevices(opts.device ?? []);
  let image: Uint8Array;
  try {
    image = new Uint8Array(await readFile(imagePath));
  } catch (e) {
    throw new UsageError(`cannot read image ${imagePath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const ram = GuestRam.allocate(mem);
  const started = performance.now();
  const vcpu = await Vcpu.start({
    ram,
    name: imagePath,
    devices,
    start: { kind: 'boot', boot: { image, imageName: imagePath, bootargs: opts.append, format: opts.raw === true ? 'raw' : 'auto' } },
  });
  const onInput = (chunk: Buffer): void => vcpu.input(new Uint8Array(chunk));
  process.stdin.on('data', onInput);
  process.stdin.on('error', () => {});
  // A closed pipe (`tern run x | head`) ends the run quietly, as it would for cat.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => process.exit(e.code === 'EPIPE' ? 0 : 74));
  vcpu.on('console', (d) => process.stdout.write(d));

  const code = await new Promise<number>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs !== undefined) timer = setTimeout(() => resolve(TIMEOUT_EXIT), timeoutMs);
    vcpu.once('exit', (c) => {
      if (timer) clearTimeout(timer);
      resolve(c);
    });
    vcpu.once('crash', (e) => {
      if (timer) clearTimeout(timer);
      process.stderr.write(`tern: ${e.message}\n`);
      resolve(70);
    });
  });
  process.stdin.off('data', onInput);
  process.stdin.pause();
  if (vcpu.stateCode !== 3 /* exited */) await vcpu.pause().catch(() => {});
  const stats = await vcpu.stats().catch(() => undefined);
  await vcpu.stop();
  const seconds = (performance.now() - started) / 1000;
  if (opts.json === true) {
    const instructions = stats?.instret ?? 0;
    process.stderr.write(
      JSON.stringify({ image: imagePath, exitCode: code, timedOut: code === TIMEOUT_EXIT, instructions, seconds, mips: instructions / seconds / 1e6, guestTicks: stats?.mtime ?? 0 }) + '\n',
    );
  }
  await new Promise<void>((r) => process.stdout.write('', () => r()));
  return code;
}
