// One live migration on tern, the way a user does it: two host daemons on loopback, the VM
// started on the first, `tern migrate` to the second, all through the tern CLI. The guest-visible
// pause is measured from outside as on QEMU: `tern vm console --follow` on the source (it follows
// the VM to the destination by itself), every console byte timestamped as it arrives here.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { MigrationReport } from '../src/migration/report.js';
import { withHugePages } from '../src/util/huge-pages.js';
import { Children, ConsoleTimeline, sleep, withTimeout, type MigrationOptions, type OutsideGap } from './qemu-migrate.js';

/** The tern CLI, next to this file in dist/. */
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export interface TernMigrationResult {
  /** The report's status, or what went wrong before there was one. */
  status: string;
  totalTimeMs: number | null;
  downtimeMs: number | null;
  setupTimeMs: number | null;
  expectedDowntimeMs: number | null;
  bytesTransferred: number | null;
  rounds: number | null;
  /** Bytes of page data per second in round 1 (every page once), from the report's perRound. */
  round1BytesPerSec: number | null;
  gap: OutsideGap;
  notes: string[];
  /** `tern migrate --json` output, as it was. */
  report: MigrationReport | undefined;
  /** With `ternBack`: the reports of the moves after the measured one (back, forth, ...), into pooled RAM. */
  backReports?: MigrationReport[];
  consoleTail: { source: string; destination: string };
}

interface HostAddrs {
  name: string;
  api: string;
  migration: string | null;
  pid: number;
}

/** Runs the CLI to completion; resolves with its exit code and output whatever the code. */
function cli(children: Children, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024, env: { ...process.env, TERN_LOG: 'warn' } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr: stderr + (err !== null && typeof err.code !== 'number' ? `\n${err.message}` : '') });
    });
    children.track(child);
  });
}

/** Starts `tern host serve` on a free port and waits for its address line. */
async function startHost(children: Children, name: string, extra: string[] = []): Promise<HostAddrs> {
  const child = children.track(spawn(process.execPath, [CLI, 'host', 'serve', '--listen', '127.0.0.1:0', '--name', name, '--json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: withHugePages({ ...process.env, TERN_LOG: 'warn' }) }));
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  return withTimeout(
    new Promise<HostAddrs>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const nl = out.indexOf('\n');
        if (nl === -1) return;
        try {
          resolve(JSON.parse(out.slice(0, nl)) as HostAddrs);
        } catch {
          reject(new Error(`tern host serve printed an unexpected start line: ${out.slice(0, nl)}`));
        }
      });
      child.once('error', (e) => reject(new Error(`cannot run the tern CLI (${CLI}): ${e.message}`)));
      child.once('exit', (code) => reject(new Error(`tern host serve (${name}) exited with code ${code}: ${err.trim()}`)));
    }),
    15_000,
    () => `tern host serve (${name}) printed no address within 15 s: ${err.trim()}`,
  );
}

/**
 * `tern vm console NAME --follow --json` on one host: one {"data": ...} line per chunk, handed to
 * `onChunk` with its arrival time, until the CLI says it follows the VM to a new host (the
 * destination's output is timed by a follower waiting there, `waitMs`: `--wait`).
 */
class ConsoleFollower {
  readonly child: ChildProcess;
  stderr = '';
  /** Set once the CLI said it follows the VM to its new host. */
  moved = false;

  constructor(children: Children, host: string, vm: string, onChunk: (data: string, t: number) => void, waitMs?: number) {
    const wait = waitMs !== undefined ? ['--wait', `${waitMs}ms`] : [];
    this.child = children.track(spawn(process.execPath, [CLI, 'vm', 'console', vm, '--host', host, '--follow', '--json', ...wait], { stdio: ['ignore', 'pipe', 'pipe'] }));
    let buf = '';
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      const t = performance.now();
      buf += d;
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '' || this.moved) continue;
        onChunk((JSON.parse(line) as { data: string }).data, t);
      }
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
      if (/following it there/.test(this.stderr)) this.moved = true;
    });
  }
}

/** Runs one migration on tern and returns its report and the outside gap; both daemons are gone when it settles. */
export async function migrateOnTern(o: MigrationOptions): Promise<TernMigrationResult> {
  const timeoutMs = o.timeoutMs ?? 60_000;
  const tailMs = o.tailMs ?? 1000;
  const vm = 'v1';
  const timeline = new ConsoleTimeline(o.tick ?? 'B', o.corruptPattern ?? /X/);
  const children = new Children();
  const notes: string[] = [];
  try {
    const [a, b] = await Promise.all([startHost(children, 'bench-a', o.ternHostArgs), startHost(children, 'bench-b', o.ternHostArgs)]);
    const started = await cli(children, ['vm', 'start', o.image, '--host', a.api, '--name', vm, '--mem', o.mem, '--append', o.append], 30_000);
    if (started.code !== 0) throw new Error(`tern vm start failed (exit ${started.code}): ${started.stderr.trim()}`);

    const follower = new ConsoleFollower(children, a.api, vm, (data, t) => timeline.add('source', data, t));
    await withTimeout(timeline.firstBytePromise, 10_000, () => `the guest printed nothing on the source within 10 s ${follower.stderr.trim()}`);
    await sleep(o.warmupMs);
    // On the destination before the VM: its output there is timed as it is printed, as a client
    // connected to QEMU's destination serial port sees it (not when the source's follower moves).
    const atDestination: { data: string; t: number }[] = [];
    new ConsoleFollower(children, b.api, vm, (data, t) => atDestination.push({ data, t }), timeoutMs + 30_000);

    const args = ['migrate', vm, '--from', a.api, '--to', b.api, '--max-bandwidth', String(o.maxBandwidthBps), '--downtime-limit', `${o.downtimeLimitMs}ms`, '--max-rounds', String(o.maxRounds ?? 30), '--timeout', `${Math.ceil(timeoutMs / 1000)}s`, '--json'];
    args.push(...(o.ternArgs ?? (o.mode === 'postcopy' ? ['--mode', 'postcopy'] : [])));
    if (o.xbzrle === true) args.push('--xbzrle', '--xbzrle-cache', '64M');
    if (o.stopCopyBandwidth !== undefined) args.push('--stop-copy-bandwidth', o.stopCopyBandwidth);
    const startedAt = performance.now();
    const run = await cli(children, args, timeoutMs + 30_000);
    let report: MigrationReport | undefined;
    try {
      report = JSON.parse(run.stdout) as MigrationReport;
    } catch {
      throw new Error(`tern migrate printed no report (exit ${run.code}): ${run.stderr.trim() || run.stdout.trim()}`);
    }
    let status: string = report.status;
    if (report.error !== undefined) status += `: ${report.error.stage}: ${report.error.message}`;

    if (report.status === 'completed') {
      // The follower moves to the destination by itself; should it have stopped instead, follow there afresh.
      // The source's output ends where the destination's history does: the destination's own
      // output is what its follower got beyond the source's bytes.
      const waitUntil = performance.now() + Math.max(tailMs, 5000);
      while (!follower.moved && follower.child.exitCode === null && performance.now() < waitUntil) await sleep(20);
      await sleep(tailMs);
      let offset = 0;
      const seen = timeline.bytes.source;
      for (const c of atDestination) {
        const from = Math.max(0, seen - offset);
        offset += c.data.length;
        if (from < c.data.length) timeline.add('destination', c.data.slice(from), c.t);
      }
      if (atDestination.length === 0) notes.push('the follower waiting on the destination got nothing');
    }
    const gap = timeline.gap(startedAt);
    if (report.status === 'completed' && gap.destinationTicks === 0) notes.push('the guest never ticked on the destination');
    if (report.switchoverReason !== undefined && report.switchoverReason !== 'downtime-limit') notes.push(`switchover: ${report.switchoverReason}`);
    const backReports: MigrationReport[] = [];
    for (let k = 1; k <= (o.ternBack ?? 0) && report.status === 'completed'; k++) {
      const move = k % 2 === 1 ? args.map((v) => (v === a.api ? b.api : v === b.api ? a.api : v)) : args;
      const ran = await cli(children, move, timeoutMs + 30_000);
      try {
        const r = JSON.parse(ran.stdout) as MigrationReport;
        backReports.push(r);
        if (r.status !== 'completed') break;
      } catch {
        notes.push(`move ${k + 1} printed no report (exit ${ran.code}): ${ran.stderr.trim().slice(0, 200)}`);
        break;
      }
    }
    const r1 = report.perRound?.[0];
    return {
      ...(backReports.length > 0 ? { backReports } : {}),
      status,
      totalTimeMs: report.totalTimeMs ?? null,
      downtimeMs: report.downtimeMs ?? null,
      setupTimeMs: report.setupTimeMs ?? null,
      expectedDowntimeMs: report.expectedDowntimeMs ?? null,
      bytesTransferred: report.bytesTransferred ?? null,
      rounds: report.rounds ?? null,
      round1BytesPerSec: r1 !== undefined && r1.durationMs > 0 ? r1.bytes / (r1.durationMs / 1000) : null,
      gap,
      notes,
      report,
      consoleTail: { source: timeline.tail('source'), destination: timeline.tail('destination') },
    };
  } finally {
    // Followers and CLI runs first (SIGKILL), then the daemons (SIGTERM: they stop their VMs; SIGKILL after 3 s).
    await children.killAll('SIGTERM', 3000);
  }
}
