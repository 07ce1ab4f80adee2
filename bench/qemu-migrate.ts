// One live migration on QEMU (source and destination qemu-system-riscv32 on loopback), driven
// through QMP, with QEMU's own figures and the guest-visible pause measured from outside: every
// console byte is timestamped as it arrives from the source's and then the destination's serial.
// Also the shared pieces of bench:migrate (options, console timeline, child-process guard).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QEMU } from './qemu.js';

export interface MigrationOptions {
  image: string;
  /** Guest RAM as QEMU's -m / tern's --mem: '256M'. */
  mem: string;
  append: string;
  /** Bytes per second; 0 = unlimited. */
  maxBandwidthBps: number;
  downtimeLimitMs: number;
  /** How long the guest runs on the source (from its first console byte) before the migration starts. */
  warmupMs: number;
  mode: 'precopy' | 'postcopy';
  /** The console character whose arrivals are timed: 'B' for verify, '\n' for munch's status lines. */
  tick?: string;
  /** Console text that means the guest saw its memory go wrong (verify's X, munch's BAD). */
  corruptPattern?: RegExp;
  /**
   * Switch over after this many rounds even if the expected downtime is still above the limit, as
   * tern's --max-rounds does (QEMU 7.2 has no such knob and would iterate forever: we raise its
   * downtime-limit to the maximum once this many rounds are done). Default 30.
   */
  maxRounds?: number;
  /** Give up (cancel; the guest stays on the source) after this long. Default 60 s. */
  timeoutMs?: number;
  /** How long to keep watching the destination's console after completion. Default 1 s. */
  tailMs?: number;
  /** XBZRLE on both, with a 64 MiB cache: QEMU's `xbzrle` capability, tern's --xbzrle. */
  xbzrle?: boolean;
  /** tern only: `tern migrate --stop-copy-bandwidth` (absent: the default, --max-bandwidth). */
  stopCopyBandwidth?: string;
  /** tern only: extra `tern migrate` arguments (--mode, --prepaging, --precopy-rounds). */
  ternArgs?: string[];
  /**
   * tern only: after the measured migration, this many more moves back and forth (the first back
   * to the first host, which kept the RAM the VM left in its RAM pool, `--ram-pool`): the figures
   * of moves into warm memory.
   */
  ternBack?: number;
  /** tern only: extra `tern host serve` arguments for both hosts (e.g. --prealloc-ram). */
  ternHostArgs?: string[];
}

/** The guest-visible pause, seen from outside through the console. */
export interface OutsideGap {
  /** Largest gap between consecutive ticks from the start of the migration to the end of watching. */
  maxGapMs: number | null;
  /** Last tick from the source to the first tick from the destination. */
  switchoverGapMs: number | null;
  /** Largest gap between ticks during warm-up, before migrating: the noise floor. */
  warmupMaxGapMs: number | null;
  sourceTicks: number;
  destinationTicks: number;
  /** The corrupt pattern appeared on either console. */
  corrupt: boolean;
  /** The five largest gaps after the migration started: when each began (ms after the start) and how long it was. */
  largest: { atMs: number; ms: number; across: 'source' | 'switchover' | 'destination' }[];
}

export interface QemuMigrationResult {
  status: string;
  totalTimeMs: number | null;
  downtimeMs: number | null;
  setupTimeMs: number | null;
  /** The last expected-downtime QEMU reported while active. */
  expectedDowntimeMs: number | null;
  /** ram.transferred: bytes on the wire for RAM. */
  bytesTransferred: number | null;
  ramTotal: number | null;
  /** ram.duplicate: zero pages (sent as a flag). */
  zeroPages: number | null;
  /** ram.normal: full pages sent. */
  normalPages: number | null;
  /** ram.dirty-sync-count: rounds (bitmap syncs). */
  rounds: number | null;
  mbps: number | null;
  gap: OutsideGap;
  /** Anything odd in QEMU's figures, said in words. */
  notes: string[];
  /** The switchover was forced after maxRounds (QEMU's downtime-limit raised), not reached by convergence. */
  forcedSwitchover: boolean;
  /** QEMU's last query-migrate answer, as it was. */
  raw: Record<string, unknown>;
  /** The end of both consoles, for a failure's message. */
  consoleTail: { source: string; destination: string };
}

/** `p`, or a rejection after `ms`; the timer never outlives the race. */
export async function withTimeout<T>(p: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message())), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Every child a benchmark starts, killed by PID at the end, whatever happens: by `killAll` in
 * the caller's finally, and on process exit or Ctrl-C as a last resort.
 */
export class Children {
  private static readonly live = new Set<ChildProcess>();
  private static hooked = false;
  private readonly mine = new Set<ChildProcess>();

  track(child: ChildProcess): ChildProcess {
    Children.hook();
    this.mine.add(child);
    Children.live.add(child);
    child.once('exit', () => {
      this.mine.delete(child);
      Children.live.delete(child);
    });
    return child;
  }

  /** Sends `signal` to each child still running, then SIGKILL after `graceMs`; resolves once all have exited. */
  async killAll(signal: NodeJS.Signals = 'SIGKILL', graceMs = 3000): Promise<void> {
    const waits = [...this.mine].map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      killPid(c.pid, signal);
      if (signal !== 'SIGKILL') {
        const t = setTimeout(() => killPid(c.pid, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(t);
      } else {
        await exited;
      }
    });
    await Promise.all(waits);
  }

  private static hook(): void {
    if (Children.hooked) return;
    Children.hooked = true;
    const killLive = (): void => {
      for (const c of Children.live) killPid(c.pid, 'SIGKILL');
    };
    process.once('exit', killLive);
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        killLive();
        process.exit(130);
      });
    }
  }
}

function killPid(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** A free TCP port on loopback (bound, read, released; the caller binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Arrival times of the console's tick characters, source first and destination after. Bytes are
 * stamped when they reach this process, which is what an outside observer sees.
 */
export class ConsoleTimeline {
  readonly ticks: { side: 'source' | 'destination'; t: number }[] = [];
  private readonly text = { source: '', destination: '' };
  firstByteAt: number | undefined;
  private firstByte: (() => void) | undefined;
  readonly firstBytePromise: Promise<void>;
  /** Total bytes seen per side (only the last few KiB are kept as text). */
  readonly bytes = { source: 0, destination: 0 };

  constructor(private readonly tick: string, private readonly corruptPattern: RegExp) {
    this.firstBytePromise = new Promise((r) => (this.firstByte = r));
  }

  add(side: 'source' | 'destination', chunk: string, t = performance.now()): void {
    if (chunk.length === 0) return;
    if (this.firstByteAt === undefined) {
      this.firstByteAt = t;
      this.firstByte?.();
    }
    this.bytes[side] += chunk.length;
    for (let i = chunk.indexOf(this.tick); i !== -1; i = chunk.indexOf(this.tick, i + 1)) this.ticks.push({ side, t });
    const s = this.text[side] + chunk;
    this.text[side] = s.length > 8192 ? s.slice(-8192) : s;
    if (this.corruptPattern.test(chunk)) this.corruptSeen = true;
  }

  corruptSeen = false;

  tail(side: 'source' | 'destination', n = 400): string {
    return this.text[side].slice(-n);
  }

  /** Gaps relative to the moment the migration was asked for. */
  gap(migrationStartedAt: number): OutsideGap {
    const src = this.ticks.filter((k) => k.side === 'source');
    const dst = this.ticks.filter((k) => k.side === 'destination');
    const all = [...src, ...dst];
    let maxGap: number | null = null;
    let warmGap: number | null = null;
    const gaps: OutsideGap['largest'] = [];
    for (let i = 1; i < all.length; i++) {
      const a = all[i - 1]!;
      const b = all[i]!;
      const g = b.t - a.t;
      if (b.t <= migrationStartedAt) {
        warmGap = Math.max(warmGap ?? 0, g);
        continue;
      }
      maxGap = Math.max(maxGap ?? 0, g);
      gaps.push({ atMs: round1(a.t - migrationStartedAt), ms: round1(g), across: a.side === b.side ? a.side : 'switchover' });
    }
    gaps.sort((x, y) => y.ms - x.ms);
    const lastSrc = src[src.length - 1];
    const firstDst = dst[0];
    return {
      maxGapMs: dst.length > 0 ? maxGap : null,
      switchoverGapMs: lastSrc !== undefined && firstDst !== undefined ? firstDst.t - lastSrc.t : null,
      warmupMaxGapMs: warmGap,
      sourceTicks: src.length,
      destinationTicks: dst.length,
      corrupt: this.corruptSeen || this.corruptPattern.test(this.text.source) || this.corruptPattern.test(this.text.destination),
      largest: gaps.slice(0, 5),
    };
  }
}

/** A QMP connection: one command at a time, answers matched by id, events ignored. */
class Qmp {
  private buf = '';
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; cmd: string }>();
  private greeted!: Promise<void>;
  private closedError: Error | undefined;

  private constructor(private readonly sock: Socket, private readonly who: string) {}

  static async connect(path: string, who: string, child: ChildProcess, timeoutMs = 10_000): Promise<Qmp> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${who} QEMU exited before its QMP socket was up`);
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock, who);
        q.start();
        await q.greeted;
        await q.execute('qmp_capabilities');
        return q;
      } catch (e) {
        if (performance.now() > end) throw new Error(`cannot reach ${who} QEMU's QMP at ${path}: ${(e as Error).message}`);
        await sleep(20);
      }
    }
  }

  private start(): void {
    let greet!: () => void;
    let fail!: (e: Error) => void;
    this.greeted = new Promise((resolve, reject) => {
      greet = resolve;
      fail = reject;
    });
    this.sock.setEncoding('utf8');
    this.sock.on('data', (d: string) => {
      this.buf += d;
      for (let nl = this.buf.indexOf('\n'); nl !== -1; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (line === '') continue;
        const msg = JSON.parse(line) as { QMP?: unknown; id?: number; return?: unknown; error?: { class: string; desc: string }; event?: string };
        if (msg.QMP !== undefined) greet();
        else if (msg.id !== undefined) {
          const w = this.waiting.get(msg.id);
          if (w === undefined) continue;
          this.waiting.delete(msg.id);
          if (msg.error !== undefined) w.reject(new Error(`${this.who} QMP ${w.cmd}: ${msg.error.class}: ${msg.error.desc}`));
          else w.resolve(msg.return);
        }
      }
    });
    const onClose = (e?: Error): void => {
      this.closedError = new Error(`${this.who} QMP connection closed${e !== undefined ? `: ${e.message}` : ''}`);
      fail(this.closedError);
      for (const w of this.waiting.values()) w.reject(this.closedError);
      this.waiting.clear();
    };
    this.sock.on('error', onClose);
    this.sock.on('close', () => onClose());
  }

  execute(cmd: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, cmd });
      this.sock.write(JSON.stringify(args === undefined ? { execute: cmd, id } : { execute: cmd, arguments: args, id }) + '\n');
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

function qemuArgs(o: MigrationOptions, qmpPath: string): string[] {
  const args = ['-M', 'virt', '-bios', 'none', '-kernel', o.image, '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-m', o.mem];
  if (o.append !== '') args.push('-append', o.append);
  args.push('-qmp', `unix:${qmpPath},server=on,wait=off`);
  return args;
}

/** QEMU 7.2 refuses a downtime-limit above 2000 s. */
const QEMU_MAX_DOWNTIME_LIMIT_MS = 2_000_000;

const num = (v: unknown): number | null => (typeof v === 'number' ? v : null);

/** Runs one migration on QEMU and returns its figures; both QEMU processes are gone when it settles. */
export async function migrateOnQemu(o: MigrationOptions): Promise<QemuMigrationResult> {
  const timeoutMs = o.timeoutMs ?? 60_000;
  const tailMs = o.tailMs ?? 1000;
  const timeline = new ConsoleTimeline(o.tick ?? 'B', o.corruptPattern ?? /X/);
  const children = new Children();
  const dir = await mkdtemp(join(tmpdir(), 'tern-bench-qemu-'));
  const qmps: Qmp[] = [];
  const stderr = { source: '', destination: '' };
  const launch = (side: 'source' | 'destination', extra: string[]): ChildProcess => {
    const child = children.track(spawn(QEMU, [...qemuArgs(o, join(dir, `${side}.qmp`)), ...extra], { stdio: ['ignore', 'pipe', 'pipe'] }));
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (d: string) => timeline.add(side, d));
    child.stderr!.on('data', (d: Buffer) => (stderr[side] = (stderr[side] + d.toString()).slice(-4000)));
    return child;
  };
  const spawned = (child: ChildProcess, side: string): Promise<void> =>
    new Promise((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e) => reject(new Error(`cannot run ${QEMU} (${side}): ${e.message} (install Debian's qemu-system-misc)`)));
    });
  try {
    const port = await freePort();
    const dst = launch('destination', ['-incoming', `tcp:127.0.0.1:${port}`]);
    await spawned(dst, 'destination');
    const src = launch('source', []);
    await spawned(src, 'source');
    const [qs, qd] = await Promise.all([
      Qmp.connect(join(dir, 'source.qmp'), 'source', src).catch((e: Error) => Promise.reject(new Error(`${e.message}\n${stderr.source}`))),
      Qmp.connect(join(dir, 'destination.qmp'), 'destination', dst).catch((e: Error) => Promise.reject(new Error(`${e.message}\n${stderr.destination}`))),
    ]);
    qmps.push(qs, qd);

    await withTimeout(timeline.firstBytePromise, 10_000, () => `the guest printed nothing on the source within 10 s\n${stderr.source}`);
    await sleep(o.warmupMs);

    const params: Record<string, unknown> = { 'downtime-limit': o.downtimeLimitMs, 'max-bandwidth': o.maxBandwidthBps };
    if (o.mode === 'postcopy') {
      params['max-postcopy-bandwidth'] = o.maxBandwidthBps;
      const caps = { capabilities: [{ capability: 'postcopy-ram', state: true }] };
      await qd.execute('migrate-set-capabilities', caps);
      await qs.execute('migrate-set-capabilities', caps);
    }
    if (o.xbzrle === true) {
      await qs.execute('migrate-set-capabilities', { capabilities: [{ capability: 'xbzrle', state: true }] });
      params['xbzrle-cache-size'] = 64 * 1024 * 1024;
    }
    await qs.execute('migrate-set-parameters', params);
    const startedAt = performance.now();
    await qs.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });

    let info: Record<string, unknown> = {};
    let expectedDowntimeMs: number | null = null;
    let postcopyStarted = false;
    let forcedSwitchover = false;
    const maxRounds = o.maxRounds ?? 30;
    let status = 'setup';
    for (;;) {
      info = (await qs.execute('query-migrate')) as Record<string, unknown>;
      status = typeof info.status === 'string' ? info.status : 'unknown';
      expectedDowntimeMs = num(info['expected-downtime']) ?? expectedDowntimeMs;
      if (status === 'completed' || status === 'failed' || status === 'cancelled') break;
      const ram = (info.ram ?? {}) as Record<string, unknown>;
      // Post-copy switches once the first round (every page once) is through: QEMU's migration-test does the same.
      if (o.mode === 'postcopy' && !postcopyStarted && status === 'active' && (num(ram['dirty-sync-count']) ?? 0) >= 2) {
        await qs.execute('migrate-start-postcopy');
        postcopyStarted = true;
      }
      // dirty-sync-count counts the syncs: round N has been sent once sync N+1 is done.
      if (o.mode === 'precopy' && !forcedSwitchover && status === 'active' && (num(ram['dirty-sync-count']) ?? 0) > maxRounds) {
        await qs.execute('migrate-set-parameters', { 'downtime-limit': QEMU_MAX_DOWNTIME_LIMIT_MS });
        forcedSwitchover = true;
      }
      if (performance.now() - startedAt > timeoutMs) {
        await qs.execute('migrate_cancel').catch(() => undefined);
        status = `timeout (still ${status} after ${Math.round(timeoutMs / 1000)} s, ${num(ram['dirty-sync-count']) ?? '?'} rounds)`;
        break;
      }
      await sleep(20);
    }
    if (status === 'completed') {
      // Watch the destination until it has ticked for tailMs (or give up after 5 s without a tick).
      const waitUntil = performance.now() + Math.max(tailMs, 5000);
      for (;;) {
        const firstDst = timeline.ticks.find((k) => k.side === 'destination');
        if (firstDst !== undefined && performance.now() - firstDst.t >= tailMs) break;
        if (performance.now() > waitUntil) break;
        await sleep(20);
      }
    }
    const ram = (info.ram ?? {}) as Record<string, unknown>;
    const gap = timeline.gap(startedAt);
    const notes: string[] = [];
    let downtimeMs = num(info.downtime);
    const totalTimeMs = num(info['total-time']);
    // QEMU 7.2 reports a meaningless post-copy downtime (larger than the whole migration).
    if (downtimeMs !== null && totalTimeMs !== null && downtimeMs > totalTimeMs) {
      notes.push(`QEMU reported downtime ${downtimeMs} ms, more than the total time: ignored`);
      downtimeMs = null;
    }
    if (forcedSwitchover) notes.push(`did not converge within ${maxRounds} rounds: switchover forced (downtime-limit raised)`);
    if (status === 'completed' && gap.destinationTicks === 0) notes.push('the guest never ticked on the destination');
    if (status === 'failed' && typeof info['error-desc'] === 'string') status = `failed: ${info['error-desc']}`;
    return {
      status,
      totalTimeMs,
      downtimeMs,
      setupTimeMs: num(info['setup-time']),
      expectedDowntimeMs,
      bytesTransferred: num(ram.transferred),
      ramTotal: num(ram.total),
      zeroPages: num(ram.duplicate),
      normalPages: num(ram.normal),
      rounds: num(ram['dirty-sync-count']),
      mbps: num(ram.mbps),
      gap,
      forcedSwitchover,
      notes,
      raw: info,
      consoleTail: { source: timeline.tail('source'), destination: timeline.tail('destination') },
    };
  } finally {
    for (const q of qmps) q.close();
    await children.killAll('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}
