import { Command } from 'commander';
import type { MigrationInfo, StartMigrationRequest } from '../host/api-types.js';
import { GUEST_CLOCKS, type MigrationProgress, type MigrationReport } from '../migration/report.js';
import { ApiError, CliError, DEFAULT_HOST, TernClient } from './client.js';
import { age, examples, keyValues, printJson, table } from './output.js';
import { UsageError, formatBytes, formatDuration, formatRate, parseChoice, parseDuration, parseRate, parseRateOrUnlimited, parseSize } from './units.js';
import { withHostOptions } from './vm.js';

interface MigrateOpts {
  from: string;
  to?: string;
  maxBandwidth?: string;
  stopCopyBandwidth?: string;
  guestClock?: string;
  minBandwidth?: string;
  rateIncrement?: string;
  downtimeLimit?: string;
  maxRounds?: string;
  verify?: boolean;
  timeout?: string;
  detach?: boolean;
  json?: boolean;
  mode?: string;
  precopyRounds?: string;
  prepaging?: string;
  resume?: boolean;
  autoConverge?: boolean;
  xbzrle?: boolean;
  xbzrleCache?: string;
  compress?: string;
  streams?: string;
  freePageHint?: boolean;
  pageRuns?: boolean;
  xbzrleFallback?: boolean;
  stun?: boolean;
  stunBudget?: string;
}

const MODES = ['precopy', 'postcopy', 'hybrid', 'auto'] as const;

/** How often `tern migrate` asks the source host how it is going. */
const POLL_MS = 200;

export function registerMigrate(program: Command): void {
  const migrate = program
    .command('migrate')
    .description('live-migrate a running VM to another host (pre-copy, post-copy, hybrid), and list, watch or cancel migrations')
    // `tern migrate list --json`: --json belongs to list, not to migrate (program has it too).
    .enablePositionalOptions()
    .argument('[vm]', 'name of the VM to move')
    .option('--from <addr>', 'the source host: host:port of its API (env TERN_HOST)', DEFAULT_HOST)
    .option('--to <addr>', 'the destination host: host:port of its API (required)')
    .option('--max-bandwidth <rate>', 'cap on migration bandwidth: 1Gbit, 100Mbit, 500MB/s, 64MiB/s; 0 = unlimited', '0')
    .option('--stop-copy-bandwidth <rate>', "rate of the stop-and-copy round, while the VM is paused: a rate, or unlimited (QEMU's completion ignores its rate limit); default: --max-bandwidth (Clark: stop-and-copy runs at the maximum)")
    .option('--guest-clock <mode>', "guest time across the switchover pause: continuous (the guest clock counts the pause and keeps up with wall time, as on Xen) or frozen (it stands still while paused, as QEMU's)", 'continuous')
    .option('--min-bandwidth <rate>', "floor of Clark's dynamic rate limit: round 1 runs at it, later rounds at the dirtying rate + --rate-increment; 0 = no floor (round 1 at --max-bandwidth)", '0')
    .option('--rate-increment <rate>', "dynamic rate limit: each live round after the first runs at the last round's dirtying rate + this; 0 = auto: max(50Mbit (Clark), --max-bandwidth / 2), no pacing when --max-bandwidth is unlimited", '0')
    .option('--downtime-limit <duration>', 'switch over once the expected downtime is below this: 50ms, 1s (QEMU downtime-limit)', '300ms')
    .option('--max-rounds <n>', 'stop iterating after this many pre-copy rounds and switch over', '30')
    .option('--mode <mode>', 'precopy; postcopy (switch first, then fetch pages on demand and push the rest); hybrid (--precopy-rounds pre-copy rounds, then post-copy); auto (pre-copy, switching to post-copy when it does not converge)', 'precopy')
    .option('--precopy-rounds <n>', 'hybrid: pre-copy rounds before switching to post-copy', '1')
    .option('--prepaging <order>', "post-copy push order: bubbling (pre-paging outward from recent faults, several pivots) or linear", 'bubbling')
    .option('--resume', 'resume the paused post-copy of VM after a broken connection (--from, --to as before); reports the VM lost if the source host is gone')
    .option('--auto-converge', "throttle the vCPU while it dirties memory faster than pre-copy sends it: 20%, then +10% up to 99% (QEMU's auto-converge)")
    .option('--xbzrle', 'send re-sent pages as XBZRLE deltas against a cache of what was sent')
    .option('--xbzrle-cache <size>', 'XBZRLE page cache size: 64M, 1G (default 64M; needs --xbzrle)')
    .option('--compress <algorithm>', 'compress the page stream: lz4 or zstd')
    .option('--streams <n>', 'parallel TCP streams for page data, 1..16 (pre-copy only)', '1')
    .option('--no-xbzrle-fallback', 'do not turn XBZRLE on when pre-copy stops converging (by default it gets two more rounds with deltas before the switchover)')
    .option('--no-page-runs', 'send every page in PAGES batches, not consecutive raw pages as PAGE_RUN frames read straight into guest RAM at the destination (pre-copy, one stream)')
    .option('--no-free-page-hint', "do not ask the guest's balloon driver for its free pages at migration start (by default round 1 skips them when the driver offers free page hinting)")
    .option('--stun', "stun rogue guest tasks in the final rounds: those writing faster than --stun-budget, through the guest's migration-assist channel (Clark's §5.5; pre-copy only; docs/assist.md)")
    .option('--stun-budget <rate>', 'with --stun: a task dirtying memory faster than this is stunned: 2MB/s, 16Mbit (default: a quarter of the bandwidth stop-and-copy expects)')
    .option('--verify', 'compare SHA-256 digests of all RAM at switchover (slower; for testing)')
    .option('--timeout <duration>', 'give up (the VM stays on the source) after this long; 0 = never', '10min')
    .option('--detach', 'print the migration id and return at once; watch it with `tern migrate status ID`')
    .option('--json', 'print exactly one JSON object: the migration report (with --detach: the migration id and where to follow it)')
    .addHelpText('after', `
While it runs on a terminal, a progress line shows the round, how much RAM is sent, the bandwidth,
what remains and the downtime expected if it switched over now. Then a report: status, total time,
downtime, rounds, bytes, and the per-round table (Clark's writable working set). Ctrl-C cancels the
migration (the VM keeps running on the source).

--max-bandwidth caps every round, the stop-and-copy round too (Clark). QEMU's max-bandwidth does
not cap its completion: it sends what is left at full speed while the VM is paused. To do the
same, --stop-copy-bandwidth unlimited (or any rate); the downtime then falls by the time the last
pages would have waited for the cap. The switchover decision still expects the bandwidth the live
rounds measured, so it stays on the safe side of --downtime-limit.

Guest time (--guest-clock): by default the guest clock counts the switchover pause, so after the
move it reads wall time again and a timer that fell due during the pause fires at once (a 20 Hz
game server sends its next update on time, not one downtime late). With frozen, guest time stands
still while the VM is paused, as QEMU's virtual clock does, and runs that much behind afterwards.
A pause you ask for (tern vm pause) always freezes guest time.

Post-copy and hybrid (docs/postcopy.md): once the VM has switched to the destination, neither
Ctrl-C nor --timeout can cancel it. A broken connection pauses both sides (status
postcopy-paused) until \`tern migrate --resume VM --from A --to B\`; if the source host is gone
for good, the report says the VM is lost (status lost). The report adds the network faults, the
fault service latency, pages requested vs pushed, and faults as a share of the pages the guest
wrote meanwhile. With --verify, post-copy compares each page as it was at the switch.

Pages in the VM's balloon (tern vm balloon) are never sent. When the guest's balloon driver
offers free page hinting, round 1 also skips the pages it reports free at the start (QEMU's
free-page-hint; --no-free-page-hint turns it off). The report's 'not sent' line counts both.

Stunning (--stun, docs/assist.md): the guest's runtime lists its tasks and their pages on vsock port
1235. When pre-copy is not converging (from round 2, expected downtime over the limit and the dirty
set not halving; or the rounds stall), the source asks it to stun the non-exempt tasks whose pages
were dirtied faster than the budget, then runs at least one more round. The destination host
resumes them after activation; a failed or cancelled migration resumes them on the source. A guest
without the channel migrates as usual; the report notes it. The report names the stunned tasks,
the round and their write rates; the per-round table adds the stunned tasks.

Exit codes: 0 completed, 1 failed, cancelled or lost (or the host could not be reached), 2 bad usage.
${examples([
  'tern migrate v1 --from 127.0.0.1:7001 --to 127.0.0.1:7002',
  'tern migrate v1 --to 127.0.0.1:7002 --max-bandwidth 1Gbit --downtime-limit 50ms --verify',
  'tern migrate v1 --to 127.0.0.1:7002 --json | jq .downtimeMs',
  'tern migrate v1 --from 127.0.0.1:7001 --to 127.0.0.1:7002 --mode postcopy',
  'tern migrate v1 --from 127.0.0.1:7001 --to 127.0.0.1:7002 --mode hybrid --precopy-rounds 1',
  'tern migrate --resume v1 --from 127.0.0.1:7001 --to 127.0.0.1:7002',
  'tern migrate v1 --from 127.0.0.1:7001 --to 127.0.0.1:7002 --auto-converge --xbzrle --compress lz4 --streams 4',
  'tern migrate v1 --from 127.0.0.1:7001 --to 127.0.0.1:7002 --max-bandwidth 64Mbit --stun --stun-budget 512KB/s',
  'tern migrate list',
  'tern migrate status 3f9a1c2e',
  'tern migrate cancel 3f9a1c2e',
])}`)
    .action(async (vmName: string | undefined, opts: MigrateOpts) => {
      if (vmName === undefined) throw new UsageError('name the VM to migrate: tern migrate VM --to HOST:PORT (or see tern migrate --help)');
      if (opts.to === undefined) throw new UsageError('--to is required: the destination host, host:port of its API');
      process.exitCode = await runMigration(vmName, opts);
    });

  withHostOptions(migrate.command('list').alias('ls'))
    .description('list the migrations of a host, outgoing and incoming (the last 100 finished ones are kept)')
    .addHelpText('after', examples(['tern migrate list', 'tern migrate list --host 127.0.0.1:7002 --json']))
    .action(async (opts: { host: string; json?: boolean }) => {
      const client = new TernClient(opts.host);
      const all = await client.listMigrations();
      if (opts.json === true) {
        printJson(all);
        return;
      }
      if (all.length === 0) {
        process.stdout.write(`no migrations on ${client.address}\n`);
        return;
      }
      process.stdout.write(table(
        ['ID', 'DIR', 'VM', 'STATUS', 'ROUTE', 'STARTED', 'TOTAL', 'DOWNTIME'],
        all.map((m) => [
          m.id,
          m.direction === 'outgoing' ? 'out' : 'in',
          m.vm,
          m.status,
          `${m.source ?? '-'} -> ${m.destination}`,
          `${age(m.startedAt)} ago`,
          m.report !== undefined ? formatDuration(m.report.totalTimeMs) : m.progress !== undefined ? formatDuration(m.progress.elapsedMs) : '-',
          m.report !== undefined && m.report.status === 'completed' ? formatDuration(m.report.downtimeMs) : m.downtimeMs !== undefined ? formatDuration(m.downtimeMs) : '-',
        ]),
      ));
    });

  withHostOptions(migrate.command('status').alias('info'))
    .description('show one migration: live progress while it runs, its report once finished (QEMU query-migrate)')
    .argument('<id>', 'migration id (from tern migrate or tern migrate list)')
    .option('-w, --watch', 'keep showing progress until it finishes, then the report (exit code as tern migrate)')
    .addHelpText('after', examples(['tern migrate status 3f9a1c2e', 'tern migrate status 3f9a1c2e --watch', 'tern migrate status 3f9a1c2e --json']))
    .action(async (id: string, opts: { host: string; json?: boolean; watch?: boolean }) => {
      const client = new TernClient(opts.host);
      let info = await client.getMigration(id);
      if (opts.watch === true && info.report === undefined && info.direction === 'outgoing') {
        const report = await follow(client, id, opts.json !== true && process.stderr.isTTY === true, false);
        info = { ...info, report, status: report.status };
      }
      if (opts.json === true) printJson(info);
      else process.stdout.write(describeMigration(info));
      if (opts.watch === true && info.status !== 'completed') process.exitCode = 1;
    });

  withHostOptions(migrate.command('cancel'))
    .description('cancel a running outgoing migration: the VM keeps running on the source (QEMU migrate_cancel)')
    .argument('<id>', 'migration id')
    .addHelpText('after', examples(['tern migrate cancel 3f9a1c2e', 'tern migrate cancel 3f9a1c2e --json']))
    .action(async (id: string, opts: { host: string; json?: boolean }) => {
      const client = new TernClient(opts.host);
      await client.cancelMigration(id);
      // Cancelling takes effect at the engine's next step; wait (briefly) to report the outcome.
      let info = await client.getMigration(id);
      const end = Date.now() + 10_000;
      while (info.report === undefined && Date.now() < end) {
        await sleep(POLL_MS);
        info = await client.getMigration(id);
      }
      if (opts.json === true) printJson(info);
      else if (info.report === undefined) process.stdout.write(`Migration ${id}: cancel requested; it is still stopping (tern migrate status ${id})\n`);
      else if (info.status === 'cancelled') process.stdout.write(`Migration ${id} cancelled; VM ${info.vm} keeps running on host ${info.source ?? '?'}\n`);
      else process.stdout.write(`Migration ${id} ended as ${info.status} before the cancel took effect\n`);
    });
}

/** --auto-converge, --xbzrle [--xbzrle-cache SIZE], --compress ALGORITHM, --streams N, --stun [--stun-budget RATE] as request fields. */
function encodingRequest(opts: MigrateOpts): Pick<StartMigrationRequest, 'autoConverge' | 'xbzrle' | 'xbzrleCacheBytes' | 'compression' | 'streams' | 'stun' | 'stunBudgetBps'> {
  const out: Pick<StartMigrationRequest, 'autoConverge' | 'xbzrle' | 'xbzrleCacheBytes' | 'compression' | 'streams' | 'stun' | 'stunBudgetBps'> = {};
  if (opts.streams !== undefined && opts.streams !== '1') {
    const n = Number(opts.streams);
    if (!Number.isInteger(n) || n < 1 || n > 16) throw new UsageError(`--streams: '${opts.streams}' is not a whole number from 1 to 16`);
    out.streams = n;
  }
  if (opts.autoConverge === true) out.autoConverge = true;
  if (opts.stunBudget !== undefined && opts.stun !== true) throw new UsageError('--stun-budget needs --stun');
  if (opts.stun === true) {
    out.stun = true;
    if (opts.stunBudget !== undefined) out.stunBudgetBps = parseRate(opts.stunBudget, '--stun-budget');
  }
  if (opts.xbzrleCache !== undefined && opts.xbzrle !== true) throw new UsageError('--xbzrle-cache needs --xbzrle');
  if (opts.xbzrle === true) {
    out.xbzrle = true;
    if (opts.xbzrleCache !== undefined) {
      const size = parseSize(opts.xbzrleCache, '--xbzrle-cache');
      if (size < 4096) throw new UsageError(`--xbzrle-cache: at least 4K, not ${opts.xbzrleCache}`);
      out.xbzrleCacheBytes = size;
    }
  }
  if (opts.compress !== undefined) {
    if (opts.compress !== 'lz4' && opts.compress !== 'zstd') throw new UsageError(`--compress: '${opts.compress}' is not lz4 or zstd`);
    out.compression = opts.compress;
  }
  return out;
}

async function runMigration(vm: string, opts: MigrateOpts): Promise<number> {
  if (opts.resume === true) return resumeMigration(vm, opts);
  const mode = parseChoice(opts.mode ?? 'precopy', MODES, '--mode');
  const prepaging = opts.prepaging ?? 'bubbling';
  if (prepaging !== 'bubbling' && prepaging !== 'linear') throw new UsageError(`--prepaging: '${prepaging}' is not bubbling or linear`);
  const req: StartMigrationRequest = {
    mode,
    prepaging,
    precopyRounds: parseCount(opts.precopyRounds ?? '1', '--precopy-rounds'),
    vm,
    to: opts.to!,
    maxBandwidthBps: parseRate(opts.maxBandwidth ?? '0', '--max-bandwidth'),
    ...(opts.stopCopyBandwidth !== undefined ? { stopCopyBandwidthBps: parseRateOrUnlimited(opts.stopCopyBandwidth, '--stop-copy-bandwidth') } : {}),
    guestClock: parseChoice(opts.guestClock ?? 'continuous', GUEST_CLOCKS, '--guest-clock'),
    minBandwidthBps: parseRate(opts.minBandwidth ?? '0', '--min-bandwidth'),
    rateIncrementBps: parseRate(opts.rateIncrement ?? '0', '--rate-increment'),
    downtimeLimitMs: Math.max(1, Math.round(parseDuration(opts.downtimeLimit ?? '300ms', '--downtime-limit'))),
    maxRounds: parseCount(opts.maxRounds ?? '30', '--max-rounds'),
    verifyRam: opts.verify === true,
    timeoutMs: Math.round(parseDuration(opts.timeout ?? '10min', '--timeout')),
    ...(opts.freePageHint === false ? { freePageHint: false } : {}),
    ...(opts.pageRuns === false ? { pageRuns: false } : {}),
    ...(opts.xbzrleFallback === false ? { xbzrleFallback: false } : {}),
    ...encodingRequest(opts),
  };
  if (req.timeoutMs! !== 0 && req.timeoutMs! < 1000) throw new UsageError(`--timeout: at least 1s (or 0 for none), not ${opts.timeout}`);
  const source = new TernClient(opts.from, '--from');
  // Checked here too so a typo fails before anything starts.
  new TernClient(opts.to!, '--to');
  const started = await source.startMigration(req);
  if (opts.detach === true) {
    if (opts.json === true) printJson(started);
    else process.stdout.write(`Migration ${started.id} of ${vm}: ${started.source} -> ${started.destination} started; watch it with: tern migrate status ${started.id} --watch --host ${source.address}\n`);
    return 0;
  }
  const live = opts.json !== true && process.stderr.isTTY === true;
  if (opts.json !== true && !live) process.stderr.write(`Migration ${started.id}: ${vm} ${started.source} -> ${started.destination} ...\n`);
  let report: MigrationReport;
  try {
    report = await follow(source, started.id, live, true);
  } catch (e) {
    // Post-copy: if the source is gone after the switch, the destination knows whether the VM is lost.
    const lost = mode !== 'precopy' && e instanceof CliError ? await lostReport(vm, source, opts.to!, e.message) : undefined;
    if (lost === undefined) throw e;
    report = lost;
  }
  if (opts.json === true) printJson(report);
  else process.stdout.write(describeReport(report, source.address, started.to));
  return report.status === 'completed' ? 0 : 1;
}

/** `tern migrate --resume VM`: reconnect a post-copy paused by a broken connection, and follow it. */
async function resumeMigration(vm: string, opts: MigrateOpts): Promise<number> {
  const source = new TernClient(opts.from, '--from');
  new TernClient(opts.to!, '--to');
  let started;
  try {
    started = await source.startMigration({ vm, to: opts.to!, resume: true });
  } catch (e) {
    if (!(e instanceof CliError) || e instanceof ApiError) throw e;
    const lost = await lostReport(vm, source, opts.to!, e.message);
    if (lost === undefined) throw e;
    if (opts.json === true) printJson(lost);
    else process.stdout.write(describeReport(lost, source.address, opts.to));
    return 1;
  }
  if (opts.detach === true) {
    if (opts.json === true) printJson(started);
    else process.stdout.write(`Migration ${started.id} of ${vm}: post-copy resumed; watch it with: tern migrate status ${started.id} --watch --host ${source.address}\n`);
    return 0;
  }
  const live = opts.json !== true && process.stderr.isTTY === true;
  if (opts.json !== true && !live) process.stderr.write(`Migration ${started.id}: resuming post-copy of ${vm} ${started.source} -> ${started.destination} ...\n`);
  let report: MigrationReport;
  try {
    report = await follow(source, started.id, live, false);
  } catch (e) {
    const lost = e instanceof CliError ? await lostReport(vm, source, opts.to!, e.message) : undefined;
    if (lost === undefined) throw e;
    report = lost;
  }
  if (opts.json === true) printJson(report);
  else process.stdout.write(describeReport(report, source.address, started.to));
  return report.status === 'completed' ? 0 : 1;
}

/**
 * The source cannot be reached. If the destination holds the VM in an unfinished post-copy, the
 * pages it lacks were only at the source: the VM is lost. Undefined when that is not the case.
 */
async function lostReport(vm: string, source: TernClient, to: string, why: string): Promise<MigrationReport | undefined> {
  let incoming: MigrationInfo | undefined;
  try {
    const all = await new TernClient(to, '--to', 5_000).listMigrations();
    incoming = all.filter((m) => m.direction === 'incoming' && m.vm === vm && (m.status === 'postcopy-paused' || m.status === 'postcopy-active')).pop();
  } catch {
    return undefined;
  }
  if (incoming === undefined) return undefined;
  const missing = incoming.missingPages ?? 0;
  const message = `the source host ${source.address} is gone (${why}) while destination ${incoming.destination} still lacks ${missing} pages of VM ${vm}: those pages existed only at the source, so the VM is lost`;
  return {
    id: incoming.id,
    vm,
    status: 'lost',
    mode: 'postcopy',
    source: source.address,
    destination: incoming.destination,
    totalTimeMs: Date.now() - Date.parse(incoming.startedAt),
    downtimeMs: 0,
    setupTimeMs: 0,
    rounds: 0,
    ramBytes: 0,
    bytesTransferred: 0,
    pagesTransferred: 0,
    zeroPages: 0,
    expectedDowntimeMs: 0,
    maxBandwidthBps: 0,
    downtimeLimitMs: 0,
    switchoverReason: '',
    stateBytes: 0,
    perRound: [],
    error: { stage: 'postcopy', message, peer: source.address },
  };
}

function parseCount(text: string, what: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1) throw new UsageError(`${what}: '${text}' is not a positive whole number`);
  return Number(text);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls the migration until it has a report, drawing a progress line on stderr when `live`.
 * With `cancelOnInterrupt`, the first Ctrl-C cancels the migration; a second one quits.
 */
async function follow(client: TernClient, id: string, live: boolean, cancelOnInterrupt: boolean): Promise<MigrationReport> {
  let interrupted = 0;
  const onSigint = (): void => {
    interrupted++;
    if (interrupted > 1 || !cancelOnInterrupt) {
      if (live) process.stderr.write('\n');
      process.exit(130);
    }
    process.stderr.write(`\ntern: cancelling migration ${id} (Ctrl-C again to stop waiting)\n`);
    client.cancelMigration(id).catch((e: unknown) => process.stderr.write(`tern: cancel failed: ${(e as Error).message}\n`));
  };
  process.on('SIGINT', onSigint);
  let failures = 0;
  try {
    for (;;) {
      let info: MigrationInfo;
      try {
        info = await client.getMigration(id);
        failures = 0;
      } catch (e) {
        // The source host is the only one who knows the outcome; ride out a short hiccup.
        if (++failures >= 10) throw e;
        await sleep(POLL_MS * 2);
        continue;
      }
      if (info.report !== undefined) {
        if (live) process.stderr.write('\r\x1b[K');
        return info.report;
      }
      if (live && info.progress !== undefined) process.stderr.write('\r\x1b[K' + progressLine(info.progress, process.stderr.columns || 120));
      await sleep(POLL_MS);
    }
  } catch (e) {
    if (live) process.stderr.write('\n');
    throw e instanceof CliError ? new CliError(`${e.message}; the migration's outcome is unknown (ask: tern migrate status ${id} --host ${client.address})`) : e;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** What sent so far means as a fraction: round 1 copies all of RAM, later rounds shrink the dirty remainder. */
function percentDone(p: MigrationProgress): number {
  if (p.ramBytes <= 0) return 0;
  if (p.round <= 1) return Math.min(99, (100 * p.pagesTransferred * 4096) / p.ramBytes);
  return Math.max(0, Math.min(99, 100 * (1 - p.remainingBytes / p.ramBytes)));
}

export function progressLine(p: MigrationProgress, columns: number): string {
  const pct = percentDone(p);
  const barWidth = 20;
  const filled = Math.round((pct / 100) * barWidth);
  const bar = '[' + '#'.repeat(filled) + '-'.repeat(barWidth - filled) + ']';
  const parts = [
    `${p.vm} ${p.stage}`,
    `round ${p.round}`,
    `${bar} ${pct.toFixed(0).padStart(2)}%`,
    `${formatBytes(p.bytesTransferred)} sent`,
    formatRate(p.bandwidthBps),
    `remaining ${formatBytes(p.remainingBytes)}`,
    `dirtying ${formatRate(p.dirtyRateBps)}`,
    `downtime ~${formatDuration(p.expectedDowntimeMs)}`,
    ...(p.throttlePercent !== undefined && p.throttlePercent > 0 ? [`throttle ${p.throttlePercent}%`] : []),
    formatDuration(p.elapsedMs),
  ];
  const line = parts.join('  ');
  return line.length > columns - 1 ? line.slice(0, Math.max(10, columns - 1)) : line;
}

/** A rate cap for people; 0: unlimited. */
function capText(bps: number): string {
  return bps > 0 ? formatRate(bps) : 'unlimited';
}

/** The report of a finished migration, for people. */
export function describeReport(r: MigrationReport, sourceAddr?: string, destAddr?: string): string {
  const route = `${r.source}${sourceAddr !== undefined ? ` (${sourceAddr})` : ''} -> ${r.destination}${destAddr !== undefined ? ` (${destAddr})` : ''}`;
  const pairs: [string, string][] = [
    ['status', r.status + (r.error !== undefined ? ` at ${r.error.stage}: ${r.error.message}${r.error.peer !== undefined ? ` (peer ${r.error.peer})` : ''}` : '')],
    ['route', `${route}, ${r.mode}`],
    ['total time', `${formatDuration(r.totalTimeMs)} (setup ${formatDuration(r.setupTimeMs)})`],
    ['downtime', r.status === 'completed' ? `${formatDuration(r.downtimeMs)} (limit ${formatDuration(r.downtimeLimitMs)}, expected ${formatDuration(r.expectedDowntimeMs)}${r.sourceDowntimeMs !== undefined ? `; as QEMU counts it: ${formatDuration(r.sourceDowntimeMs)}` : ''})` : '-'],
    ['rounds', `${r.rounds}${r.switchoverReason !== '' ? ` (switchover: ${r.switchoverReason})` : ''}`],
    ['RAM', formatBytes(r.ramBytes)],
    ['transferred', `${formatBytes(r.bytesTransferred)} in ${r.pagesTransferred} pages (${r.zeroPages} zero), state ${formatBytes(r.stateBytes)}`],
    ['bandwidth cap', `${capText(r.maxBandwidthBps)}${r.stopCopyBandwidthBps !== undefined && r.stopCopyBandwidthBps !== r.maxBandwidthBps ? `; stop-and-copy ${capText(r.stopCopyBandwidthBps)}` : ''}`],
  ];
  if (r.guestClock !== undefined && r.status === 'completed') pairs.push(['guest clock', r.guestClock === 'continuous' ? 'continuous (counted the pause)' : 'frozen during the pause']);
  const sk = r.skippedPages;
  if (sk !== undefined && sk.balloon + sk.freeHint > 0) pairs.push(['not sent', `${sk.balloon} ballooned page entries, ${sk.freeHint} free-hinted pages (${formatBytes((sk.balloon + sk.freeHint) * 4096)})`]);
  if (r.ramDigestMatch !== undefined) pairs.push(['RAM digest', r.ramDigestMatch ? 'match' : 'MISMATCH']);
  const xb = r.xbzrle;
  if (xb !== undefined) pairs.push(['xbzrle', `${xb.hits} deltas (${formatBytes(xb.deltaBytes)}), ${xb.misses} misses, ${xb.overflows} overflows, ${xb.unchanged} unchanged; cache ${formatBytes(xb.cacheBytes)}, ${xb.evictions} evictions${xb.fallbackRound !== undefined ? `; turned on after round ${xb.fallbackRound} (not converging)` : ''}`]);
  const z = r.compression;
  if (r.pageRuns !== undefined && r.pageRuns.frames > 0) pairs.push(['page runs', `${r.pageRuns.pages} pages in ${r.pageRuns.frames} PAGE_RUN frames, read straight into guest RAM`]);
  if (z !== undefined) pairs.push(['compression', `${z.algorithm}: ${formatBytes(z.inputBytes)} -> ${formatBytes(z.outputBytes)} (ratio ${z.ratio})${z.skippedBatches > 0 ? `, ${z.skippedBatches} batches sent plain after batches that did not shrink` : ''}`]);
  if (r.autoConverge !== undefined) pairs.push(['auto-converge', `throttle up to ${r.autoConverge.maxThrottlePercent}%`]);
  if (r.stun !== undefined) pairs.push(['stun', describeStun(r.stun)]);
  const pc = r.postcopy;
  if (pc !== undefined) {
    pairs.push(
      ['post-copy', `${pc.prepaging} push${pc.precopyRounds > 0 ? ` after ${pc.precopyRounds} pre-copy round${pc.precopyRounds > 1 ? 's' : ''}` : ''}, ${formatDuration(pc.postcopyTimeMs)} until the last page`],
      ['network faults', `${pc.networkFaults} (${(pc.faultsPerWws * 100).toFixed(1)}% of the ${pc.writableWorkingSetPages}-page writable working set)`],
      ['fault latency', `p50 ${formatDuration(pc.faultLatencyMs.p50)}, p99 ${formatDuration(pc.faultLatencyMs.p99)}, max ${formatDuration(pc.faultLatencyMs.max)}`],
      ['pages', `${pc.pagesRequested} requested, ${pc.pagesPushed} pushed`],
    );
    if (pc.resumes > 0) pairs.push(['resumes', `${pc.resumes} (paused ${formatDuration(pc.pausedMs)})`]);
  }
  let out = `Migration ${r.id} of ${r.vm}: ${r.status}\n` + indent(keyValues(pairs));
  if (r.perRound.length > 0) {
    out += '\n' + indent(table(
      ['ROUND', 'PAGES', 'BYTES', 'TIME', 'DIRTY PAGES', 'DIRTY RATE', 'BANDWIDTH', 'LIMIT', 'THROTTLE', ...(r.stun !== undefined ? ['STUNNED'] : [])],
      r.perRound.map((s) => [
        String(s.round),
        String(s.pages),
        formatBytes(s.bytes),
        formatDuration(s.durationMs),
        String(s.dirtyPages),
        formatRate(s.dirtyRateBps),
        formatRate(s.bandwidthBps),
        s.rateLimitBps > 0 ? formatRate(s.rateLimitBps) : 'none',
        `${s.throttlePercent}%`,
        ...(r.stun !== undefined ? [s.stunned?.join(',') ?? ''] : []),
      ]),
      [0, 1, 2, 3, 4, 5, 6, 7, 8],
    ));
  }
  return out;
}

function describeStun(s: NonNullable<MigrationReport['stun']>): string {
  const rates = s.tasks.map((t) => `${t.name}${t.exempt ? '(exempt)' : ''} ${formatRate(t.writeRateBps)}${t.stunned ? ' STUNNED' : ''}`).join(', ');
  const head = s.outcome === 'stunned' ? `stunned after round ${s.round}` : s.outcome;
  const resumed = s.resumedOnSource !== undefined ? `; resumed on the source: ${s.resumedOnSource.join(', ') || 'none'}` : '';
  return `${head}, budget ${formatRate(s.budgetBps)}${rates !== '' ? `: ${rates}` : ''}${s.note !== undefined ? ` (${s.note})` : ''}${resumed}`;
}

function indent(text: string): string {
  return text.split('\n').map((l) => (l === '' ? l : '  ' + l)).join('\n');
}

function describeMigration(m: MigrationInfo): string {
  if (m.report !== undefined) return describeReport(m.report, undefined, m.to);
  const pairs: [string, string][] = [
    ['direction', m.direction],
    ['vm', m.vm],
    ['status', m.status],
    ['route', `${m.source ?? '(unknown)'} -> ${m.destination}${m.to !== undefined ? ` (${m.to})` : ''}`],
    ['started', `${m.startedAt} (${age(m.startedAt)} ago)`],
  ];
  if (m.finishedAt !== undefined) pairs.push(['finished', m.finishedAt]);
  if (m.downtimeMs !== undefined) pairs.push(['downtime', formatDuration(m.downtimeMs)]);
  if (m.error !== undefined) pairs.push(['error', m.error]);
  const p = m.progress;
  if (p !== undefined) {
    pairs.push(
      ['stage', `${p.stage}, round ${p.round}`],
      ['sent', `${formatBytes(p.bytesTransferred)} (${p.pagesTransferred} pages) of ${formatBytes(p.ramBytes)} RAM`],
      ['remaining', formatBytes(p.remainingBytes)],
      ['bandwidth', formatRate(p.bandwidthBps)],
      ['dirty rate', formatRate(p.dirtyRateBps)],
      ['expected downtime', formatDuration(p.expectedDowntimeMs)],
      ['elapsed', formatDuration(p.elapsedMs)],
    );
  }
  return `Migration ${m.id}\n` + indent(keyValues(pairs));
}
