// bench:net — what clients see of a live migration through the gateway. A gateway and two host
// daemons on loopback; a kv VM and a tick VM exposed through the gateway; clients measure from
// outside: a redis client doing one request at a time (latency per request, throughput per
// phase), redis-benchmark alongside (with --tick-alone: during kv's migrations only), and a tick
// client timestamping every 20 Hz update. Each VM migrates back and forth; the largest client-observed gap is compared with
// the downtime the migration reports. Not a test: it prints figures.
//
//   npm run bench:net -- [--migrations N] [--max-bandwidth 1Gbit] [--no-redis-benchmark] [--tick-alone] [--host-arg 'OPTIONS'] [--json]
import { execFile, spawn, spawnSync } from 'node:child_process';
import { get as httpGet, type ClientRequest } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { withHugePages } from '../src/util/huge-pages.js';
import { Children, sleep } from './qemu-migrate.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const IMAGES = fileURLToPath(new URL('../../guests/images/', import.meta.url));

interface Args {
  migrations: number;
  maxBandwidth: string;
  json: boolean;
  redisBenchmark: boolean;
  /** Stop redis-benchmark before tick's migrations (Clark's Quake 3 case: the game server alone). Default: it runs throughout. */
  tickAlone: boolean;
  /** Extra `tern host serve` options for both hosts (--host-arg, repeatable), for A/B runs. */
  hostArgs: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { migrations: 4, maxBandwidth: '1Gbit', json: false, redisBenchmark: true, tickAlone: false, hostArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--migrations') a.migrations = Math.max(1, Number(argv[++i]));
    else if (k === '--max-bandwidth') a.maxBandwidth = argv[++i] ?? a.maxBandwidth;
    else if (k === '--json') a.json = true;
    else if (k === '--no-redis-benchmark') a.redisBenchmark = false;
    else if (k === '--tick-alone') a.tickAlone = true;
    else if (k === '--host-arg') a.hostArgs.push(...(argv[++i] ?? '').split(' ').filter((s) => s !== ''));
    else if (k === '--help' || k === '-h') {
      process.stdout.write("usage: npm run bench:net -- [--migrations N (4)] [--max-bandwidth RATE (1Gbit)] [--no-redis-benchmark] [--tick-alone] [--host-arg 'OPTIONS' (for both hosts' tern host serve; repeatable)] [--json]\n");
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

const children = new Children();

function cli(args: string[], timeoutMs = 120_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs, env: { ...process.env, TERN_LOG: 'warn' }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr });
    });
    children.track(c);
  });
}

/**
 * `GET /v1/events` of one host: when each migration started there (`migration.started`), on this
 * process's performance clock (the event's `time` is the host's wall clock, the same machine's).
 */
class MigrationStarts {
  readonly startedAt = new Map<string, number>();
  /** When each migration completed there (`migration.completed`: the source read ACTIVATED, just after the resume). */
  readonly completedAt = new Map<string, number>();
  private readonly req: ClientRequest;

  constructor(api: string) {
    const [host, port] = api.split(':');
    this.req = httpGet({ host, port: Number(port), path: '/v1/events' }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.startsWith('data: ')) continue;
          const e = JSON.parse(line.slice(6)) as { type: string; vm: string; migration?: string; time: string };
          if (e.type === 'migration.started' && e.migration !== undefined) this.startedAt.set(e.migration, Date.parse(e.time) - performance.timeOrigin);
          if (e.type === 'migration.completed' && e.migration !== undefined) this.completedAt.set(e.migration, Date.parse(e.time) - performance.timeOrigin);
        }
      });
    });
    this.req.on('error', () => {});
  }

  stop(): void {
    this.req.destroy();
  }
}

/** Starts a serving command (`--json` start line first) and returns that line. */
function serve(args: string[]): Promise<Record<string, unknown>> {
  const c = children.track(spawn(process.execPath, [CLI, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: withHugePages({ ...process.env, TERN_LOG: 'warn' }) }));
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`${args.join(' ')} did not start`)), 20_000);
    c.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0 && out.length > 0) {
        clearTimeout(t);
        resolve(JSON.parse(out.slice(0, nl)) as Record<string, unknown>);
      }
    });
    c.stdout!.resume();
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const p = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

async function connectRetry(port: number): Promise<Socket> {
  for (let i = 0; ; i++) {
    try {
      return await new Promise<Socket>((res, rej) => {
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => res(s));
        s.once('error', rej);
      });
    } catch (e) {
      if (i > 100) throw e;
      await sleep(100);
    }
  }
}

/** One request at a time over one connection: every reply's arrival time. */
class RedisProbe {
  readonly done: number[] = [];
  readonly latencies: number[] = [];
  private stopped = false;
  private buf = '';
  private sentAt = 0;
  errors = 0;

  constructor(private readonly s: Socket) {
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      this.buf += d;
      if (!this.buf.endsWith('\r\n')) return;
      if (this.buf.startsWith('-')) this.errors++;
      this.buf = '';
      const now = performance.now();
      this.latencies.push(now - this.sentAt);
      this.done.push(now);
      this.next();
    });
    s.on('error', () => this.errors++);
    this.next();
  }

  private next(): void {
    if (this.stopped) return;
    this.sentAt = performance.now();
    this.s.write('*3\r\n$3\r\nSET\r\n$5\r\nprobe\r\n$5\r\nvalue\r\n');
  }

  stop(): void {
    this.stopped = true;
    this.s.destroy();
  }
}

/** Timestamps every `tick <seq> <guest-ms>` line; checks the sequence has no hole. */
class TickProbe {
  readonly at: number[] = [];
  holes = 0;
  private last = -1;
  private buf = '';

  constructor(private readonly s: Socket) {
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const m = /^tick (\d+) /.exec(line);
        if (m === null) continue;
        const seq = Number(m[1]);
        if (this.last >= 0 && seq !== this.last + 1) this.holes++;
        this.last = seq;
        this.at.push(performance.now());
      }
    });
  }

  stop(): void {
    this.s.destroy();
  }
}

/** The longest silence between `from` and `to`, and when it ended. */
function maxGap(times: readonly number[], from: number, to: number): { ms: number; endedAt: number } {
  let prev = -1;
  let max = 0;
  let endedAt = from;
  for (const t of times) {
    if (t < from) {
      prev = t;
      continue;
    }
    if (prev >= 0 && t - prev > max) {
      max = t - prev;
      endedAt = t;
    }
    prev = t;
    if (t > to) break;
  }
  return { ms: max, endedAt };
}

/** The silence around `at`: from the last time at or before it to the first after it. */
function gapAround(times: readonly number[], at: number): number | null {
  let prev = -1;
  for (const t of times) {
    if (t <= at) {
      prev = t;
      continue;
    }
    return prev >= 0 ? t - prev : null;
  }
  return null;
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function countIn(times: readonly number[], from: number, to: number): number {
  let n = 0;
  for (const t of times) if (t >= from && t < to) n++;
  return n;
}

interface Row {
  vm: string;
  migration: number;
  direction: string;
  downtimeMs: number;
  totalTimeMs: number;
  clientMaxGapMs: number;
  gapMinusDowntimeMs: number;
  /** When that gap ended, relative to the end of `tern migrate` (which returns right after the activation): near 0 at the switchover, well below it during pre-copy. */
  gapEndedMs: number;
  /** The longest gap from the migration's start on the source host (its `migration.started` event), leaving out the CLI's own start-up. */
  migrationMaxGapMs: number | null;
  /** The gap around the switchover (the middle of the pause: the completed event's time − downtime / 2; the event time has ms resolution). */
  switchGapMs: number | null;
  /** The longest gap in the second before the migration started (same probe, nothing migrating): this machine's noise floor. */
  beforeMaxGapMs: number;
  p50Ms: number | null;
  p99Ms: number | null;
  rpsBefore: number | null;
  rpsDuring: number | null;
  rpsAfter: number | null;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.redisBenchmark && spawnSync('redis-benchmark', ['--version'], { stdio: 'ignore' }).error !== undefined) {
    process.stderr.write('bench:net: redis-benchmark is not installed (Debian package redis-tools: apt-get install redis-tools); or run with --no-redis-benchmark\n');
    process.exit(2);
  }
  const gw = await serve(['gateway', 'serve', '--listen', '127.0.0.1:0']);
  const a = await serve(['host', 'serve', '--listen', '127.0.0.1:0', '--name', 'a', ...args.hostArgs]);
  const b = await serve(['host', 'serve', '--listen', '127.0.0.1:0', '--name', 'b', ...args.hostArgs]);
  const gateway = gw['listen'] as string;
  const starts = new Map([a, b].map((h) => [h['name'] as string, new MigrationStarts(h['api'] as string)]));
  const kvPort = await freePort();
  const tickPort = await freePort();
  for (const [img, name, expose] of [['kv.elf', 'kv', `${kvPort}:6379`], ['tick.elf', 'tick', `${tickPort}:7777`]] as const) {
    const r = await cli(['vm', 'start', IMAGES + img, '--host', a['api'] as string, '--name', name, '--mem', '64M', '--expose', expose, '--gateway', gateway]);
    if (r.code !== 0) throw new Error(`vm start ${name}: ${r.stderr}`);
  }
  const redis = new RedisProbe(await connectRetry(kvPort));
  const tick = new TickProbe(await connectRetry(tickPort));
  const benchProc = children.track(spawn(args.redisBenchmark ? 'redis-benchmark' : 'sleep', args.redisBenchmark ? ['-p', String(kvPort), '-t', 'set,get', '-n', '100000000', '-c', '10', '-q'] : ['86400'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  let benchOut = '';
  benchProc.stdout!.on('data', (d: Buffer) => (benchOut = (benchOut + d.toString()).slice(-4000)));
  benchProc.stderr!.on('data', (d: Buffer) => (benchOut = (benchOut + d.toString()).slice(-4000)));
  await sleep(2000);

  const rows: Row[] = [];
  const hosts = [a, b];
  let benchAlive = false;
  for (const vm of ['kv', 'tick']) {
    if (vm === 'tick' && args.tickAlone) {
      // Clark's Quake 3 case is the game server alone: redis-benchmark, which on a 2-core machine
      // keeps both cores busy with the kv VM, stops once kv's migrations are done.
      benchAlive = benchProc.exitCode === null;
      benchProc.kill('SIGTERM');
      await sleep(500);
    }
    for (let m = 0; m < args.migrations; m++) {
      const from = hosts[m % 2]!;
      const to = hosts[(m + 1) % 2]!;
      await sleep(1000);
      const t0 = performance.now();
      const r = await cli(['migrate', vm, '--from', from['api'] as string, '--to', to['api'] as string, '--max-bandwidth', args.maxBandwidth, '--json']);
      const t1 = performance.now();
      const rep = JSON.parse(r.stdout) as { id: string; status: string; downtimeMs: number; totalTimeMs: number };
      if (rep.status !== 'completed') throw new Error(`migration of ${vm}: ${rep.status}`);
      await sleep(1000);
      const t2 = performance.now();
      const times = vm === 'kv' ? redis.done : tick.at;
      const gap = maxGap(times, t0, t1 + 500);
      const startedAt = starts.get(from['name'] as string)!.startedAt.get(rep.id);
      const migrationGap = startedAt !== undefined ? maxGap(times, startedAt, t1 + 500).ms : null;
      const completedAt = starts.get(from['name'] as string)!.completedAt.get(rep.id);
      const switchGap = completedAt !== undefined ? gapAround(times, completedAt - rep.downtimeMs / 2) : null;
      const lat = vm === 'kv' ? redis.latencies.slice(-countIn(redis.done, t0, t2)) : [];
      const w = t1 - t0;
      rows.push({
        vm,
        migration: m + 1,
        direction: `${from['name'] as string}->${to['name'] as string}`,
        downtimeMs: rep.downtimeMs,
        totalTimeMs: rep.totalTimeMs,
        clientMaxGapMs: Math.round(gap.ms * 10) / 10,
        gapMinusDowntimeMs: Math.round((gap.ms - rep.downtimeMs) * 10) / 10,
        gapEndedMs: Math.round(gap.endedAt - t1),
        migrationMaxGapMs: migrationGap !== null ? Math.round(migrationGap * 10) / 10 : null,
        switchGapMs: switchGap !== null ? Math.round(switchGap * 10) / 10 : null,
        beforeMaxGapMs: Math.round(maxGap(times, t0 - 1000, t0).ms * 10) / 10,
        p50Ms: vm === 'kv' ? Math.round(pct(lat, 50) * 100) / 100 : null,
        p99Ms: vm === 'kv' ? Math.round(pct(lat, 99) * 100) / 100 : null,
        rpsBefore: vm === 'kv' ? Math.round(countIn(times, t0 - 1000, t0)) : null,
        rpsDuring: vm === 'kv' ? Math.round((countIn(times, t0, t1) / w) * 1000) : null,
        rpsAfter: vm === 'kv' ? Math.round(countIn(times, t1, t1 + 1000)) : null,
      });
    }
  }
  redis.stop();
  tick.stop();
  for (const w of starts.values()) w.stop();
  if (!args.tickAlone) benchAlive = benchProc.exitCode === null;
  await children.killAll();
  const summary = {
    maxBandwidth: args.maxBandwidth,
    probeErrors: redis.errors,
    tickHoles: tick.holes,
    redisBenchmarkAliveAtEnd: benchAlive,
    tickAlone: args.tickAlone,
    redisBenchmarkErrors: /error|reset/i.test(benchOut),
    rows,
  };
  if (args.json) {
    process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
    return;
  }
  const head = ['VM', '#', 'DIR', 'DOWNTIME', 'TOTAL', 'CLIENT MAX GAP', 'GAP-DOWNTIME', 'GAP ENDED', 'FROM START', 'SWITCH GAP', 'GAP BEFORE', 'P50', 'P99', 'RPS BEFORE', 'DURING', 'AFTER'];
  const lines = rows.map((r) => [r.vm, String(r.migration), r.direction, `${r.downtimeMs.toFixed(1)} ms`, `${r.totalTimeMs.toFixed(0)} ms`, `${r.clientMaxGapMs} ms`, `${r.gapMinusDowntimeMs} ms`, `${r.gapEndedMs} ms`, r.migrationMaxGapMs === null ? '-' : `${r.migrationMaxGapMs} ms`, r.switchGapMs === null ? '-' : `${r.switchGapMs} ms`, `${r.beforeMaxGapMs} ms`, r.p50Ms === null ? '-' : `${r.p50Ms} ms`, r.p99Ms === null ? '-' : `${r.p99Ms} ms`, String(r.rpsBefore ?? '-'), String(r.rpsDuring ?? '-'), String(r.rpsAfter ?? '-')]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  for (const l of [head, ...lines]) process.stdout.write(l.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n');
  process.stdout.write(`bandwidth cap ${args.maxBandwidth}; probe errors ${redis.errors}; tick sequence holes ${tick.holes}; redis-benchmark ${!args.redisBenchmark ? 'not run' : `${benchAlive ? 'still running' : 'had exited'} at the end of ${args.tickAlone ? "kv's migrations (stopped for tick's: --tick-alone)" : 'the tick migrations'}`}${summary.redisBenchmarkErrors ? ' WITH ERRORS' : ', no errors'}\n`);
  process.stdout.write('CLIENT MAX GAP: longest silence seen by the one-at-a-time redis probe (kv) or between tick lines (tick, 50 ms apart normally) during the migration; GAP ENDED: when it ended, relative to the end of tern migrate (which returns just after the activation); FROM START: the longest gap from the migration start on the source host (its migration.started event), without the tern CLI start-up; SWITCH GAP: the gap around the switchover (the middle of the pause, from migration.completed on the source); GAP BEFORE: the longest gap in the second before the migration (nothing migrating: the noise floor).\n');
}

main().catch(async (e: unknown) => {
  process.stderr.write(`bench:net: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  await children.killAll();
  process.exit(1);
});
