import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import type { MigrationReport } from '../migration/report.js';
import { withHugePages } from '../util/huge-pages.js';
import { TernClient } from './client.js';
import { examples, printJson, table } from './output.js';
import { UsageError, formatBytes, parseDuration, parseRate, parseRateOrUnlimited, parseSize } from './units.js';

interface DemoOptions {
  migrations: string;
  image: string;
  mem: string;
  append: string;
  maxBandwidth: string;
  stopCopyBandwidth?: string;
  downtimeLimit: string;
  verify?: boolean;
  json?: boolean;
}

interface Daemon {
  readonly name: string;
  readonly api: string;
  readonly child: ChildProcess;
}

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const DEFAULT_IMAGE = fileURLToPath(new URL('../../../guests/images/verify.elf', import.meta.url));

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('the main job: two hosts on this machine, a busy self-checking guest, live migrations back and forth, a report')
    .option('-n, --migrations <n>', 'how many migrations (alternating a->b, b->a)', '6')
    .option('--image <file>', 'guest image', DEFAULT_IMAGE)
    .option('-m, --mem <size>', 'guest RAM', '128M')
    .option('-a, --append <args>', 'guest boot arguments (verify: rewrites a 4 MiB region, a pass every 20 ms of guest time)', 'region=4M pace=20ms')
    .option('--max-bandwidth <rate>', 'migration bandwidth cap (0 = unlimited)', '1Gbit')
    .option('--stop-copy-bandwidth <rate>', "rate of the stop-and-copy round: a rate or unlimited, as QEMU's completion (default: --max-bandwidth; see tern migrate --help)")
    .option('--downtime-limit <duration>', 'target downtime (QEMU downtime-limit)', '50ms')
    .option('--verify', 'also compare a SHA-256 of all RAM on both sides at each switchover (adds the hashing to the downtime)')
    .option('--json', 'print one JSON object: every migration report and the console check')
    .addHelpText('after', `
Starts two host daemons (a and b) on free loopback ports as child processes, boots the guest on
a, migrates it back and forth while it runs, then checks its console: the verify guest prints 'B'
after every pass over its memory region and 'X' if it ever finds memory that is not what it wrote,
so a migration that lost or reordered a page shows up as an X. The report also says how far the
guest's clock fell behind wall time over all the moves: the switchover pauses count as guest time
(tern migrate --guest-clock), so it stays within a few ms. Both daemons are stopped at the end.
Exit code 0 when every migration completed and no X was seen, 1 otherwise.
${examples(['tern demo', 'tern demo --stop-copy-bandwidth unlimited', 'tern demo --migrations 10 --max-bandwidth 0 --json', 'tern demo --image guests/images/munch.elf --append "wws=8M rate=16M rss=32M"'])}`)
    .action(async (opts: DemoOptions) => {
      process.exitCode = await demo(opts);
    });
}

function startDaemon(name: string): Promise<Daemon> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'host', 'serve', '--listen', '127.0.0.1:0', '--migration-listen', '127.0.0.1:0', '--name', name, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: withHugePages({ ...process.env, TERN_LOG: process.env.TERN_LOG ?? 'warn' }),
    });
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const onData = (d: Buffer): void => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      child.stdout!.off('data', onData);
      try {
        const line = JSON.parse(out.slice(0, nl)) as { api: string };
        resolve({ name, api: line.api, child });
      } catch {
        reject(new Error(`host ${name} printed an unexpected start line: ${out.slice(0, nl)}`));
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`host ${name} exited with ${code} before it was ready: ${err.trim()}`)));
  });
}

async function stopDaemon(d: Daemon): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return;
  const gone = new Promise<void>((r) => d.child.once('exit', () => r()));
  d.child.kill('SIGTERM');
  const timer = setTimeout(() => d.child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(timer);
}

async function waitForReport(client: TernClient, id: string, onProgress: (line: string) => void): Promise<MigrationReport> {
  for (;;) {
    const m = await client.getMigration(id);
    if (m.report !== undefined) return m.report;
    const p = m.progress;
    if (p !== undefined) onProgress(`round ${p.round}, ${formatBytes(p.bytesTransferred)} sent, ${formatBytes(p.remainingBytes)} dirty`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function demo(opts: DemoOptions): Promise<number> {
  const count = Number(opts.migrations);
  if (!Number.isInteger(count) || count < 1 || count > 1000) throw new UsageError(`--migrations: '${opts.migrations}' is not a number from 1 to 1000`);
  const memBytes = parseSize(opts.mem, '--mem', true);
  const maxBandwidthBps = parseRate(opts.maxBandwidth, '--max-bandwidth');
  const stopCopy = opts.stopCopyBandwidth !== undefined ? { stopCopyBandwidthBps: parseRateOrUnlimited(opts.stopCopyBandwidth, '--stop-copy-bandwidth') } : {};
  const downtimeLimitMs = parseDuration(opts.downtimeLimit, '--downtime-limit');
  let image: Buffer;
  try {
    image = await readFile(opts.image);
  } catch (e) {
    throw new UsageError(`cannot read image ${opts.image}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const say = (s: string): void => {
    if (opts.json !== true) process.stdout.write(s + '\n');
  };
  const tty = process.stdout.isTTY === true && opts.json !== true;
  const daemons: Daemon[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(daemons.map(stopDaemon));
  };
  const onSignal = (): void => {
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // `tern demo | head` closes our stdout: stop the hosts before going, never leave them behind.
  const onStdoutError = (): void => {
    void stopAll().then(() => process.exit(0));
  };
  process.stdout.on('error', onStdoutError);
  try {
    daemons.push(await startDaemon('a'), await startDaemon('b'));
    const [a, b] = daemons as [Daemon, Daemon];
    say(`tern demo: host a at ${a.api}, host b at ${b.api}`);
    const ca = new TernClient(a.api);
    const cb = new TernClient(b.api);
    const name = 'demo';
    const imageName = opts.image.split('/').pop() ?? 'image';
    await ca.createVm({ name, image: image.toString('base64'), imageName, memBytes, bootArgs: opts.append });
    say(`started VM '${name}' on a: ${imageName}, ${formatBytes(memBytes)} RAM, boot args "${opts.append}"`);
    await new Promise((r) => setTimeout(r, 1500));

    const clockAt = async (c: TernClient): Promise<{ guestMs: number; wallMs: number } | undefined> => {
      const t0 = performance.now();
      const v = await c.getVm(name);
      return v.guestTimeMs === undefined ? undefined : { guestMs: v.guestTimeMs, wallMs: (t0 + performance.now()) / 2 };
    };
    const clock0 = await clockAt(ca);
    const reports: MigrationReport[] = [];
    let here = { name: 'a', client: ca, api: a.api };
    let there = { name: 'b', client: cb, api: b.api };
    for (let i = 1; i <= count; i++) {
      const started = await here.client.startMigration({ vm: name, to: there.api, maxBandwidthBps, ...stopCopy, downtimeLimitMs, verifyRam: opts.verify === true });
      const report = await waitForReport(here.client, started.id, (line) => {
        if (tty) process.stdout.write(`\r  #${i} ${here.name} -> ${there.name}: ${line}\x1b[K`);
      });
      if (tty) process.stdout.write('\r\x1b[K');
      reports.push(report);
      const ok = report.status === 'completed';
      say(
        `  #${String(i).padEnd(2)} ${here.name} -> ${there.name}  ${report.status.padEnd(9)}  total ${report.totalTimeMs.toFixed(0).padStart(5)} ms  downtime ${report.downtimeMs.toFixed(1).padStart(6)} ms  rounds ${String(report.rounds).padStart(2)}  sent ${formatBytes(report.bytesTransferred).padStart(10)}${report.ramDigestMatch === undefined ? '' : `  RAM digest ${report.ramDigestMatch ? 'match' : 'MISMATCH'}`}`,
      );
      if (!ok) {
        say(`    failed at ${report.error?.stage ?? '?'}: ${report.error?.message ?? 'no reason given'}`);
        break;
      }
      [here, there] = [there, here];
      await new Promise((r) => setTimeout(r, 300));
    }

    // Guest time against wall time over all the moves (guest clock 'continuous': the pauses count).
    const clock1 = await clockAt(here.client);
    const guestClockLagMs = clock0 !== undefined && clock1 !== undefined ? Math.round((clock1.wallMs - clock0.wallMs - (clock1.guestMs - clock0.guestMs)) * 10) / 10 : null;
    const consoleText = (await here.client.console(name)).toString('latin1');
    const passes = (consoleText.match(/B/g) ?? []).length;
    const corrupt = consoleText.includes('X');
    const completed = reports.filter((r) => r.status === 'completed');
    const downtimes = completed.map((r) => r.downtimeMs).sort((x, y) => x - y);
    const summary = {
      migrations: reports.length,
      completed: completed.length,
      downtimeMs: {
        min: downtimes[0] ?? null,
        median: downtimes[Math.floor(downtimes.length / 2)] ?? null,
        max: downtimes[downtimes.length - 1] ?? null,
      },
      bytesTransferred: completed.reduce((n, r) => n + r.bytesTransferred, 0),
      pausedMs: Math.round(completed.reduce((n, r) => n + r.downtimeMs, 0) * 10) / 10,
      guestClockLagMs,
      guestPasses: passes,
      corruptionSeen: corrupt,
      finalHost: here.name,
    };
    if (opts.json === true) {
      printJson({ ...summary, reports });
    } else {
      say('');
      say(table(['', 'value'], [
        ['migrations completed', `${completed.length} of ${reports.length}`],
        ['downtime min / median / max', downtimes.length > 0 ? `${summary.downtimeMs.min!.toFixed(1)} / ${summary.downtimeMs.median!.toFixed(1)} / ${summary.downtimeMs.max!.toFixed(1)} ms` : '-'],
        ['bytes sent in all', formatBytes(summary.bytesTransferred)],
        ['guest clock behind wall time', guestClockLagMs === null ? '-' : `${guestClockLagMs.toFixed(1)} ms after ${summary.pausedMs.toFixed(1)} ms of pauses (the pauses count as guest time)`],
        ['guest passes (B) in its console', String(passes)],
        ['memory corruption (X) seen', corrupt ? 'YES' : 'no'],
        ['VM now runs on', here.name],
      ]));
    }
    await here.client.deleteVm(name).catch(() => {});
    return completed.length === count && !corrupt ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stopAll();
    process.stdout.off('error', onStdoutError);
  }
}
