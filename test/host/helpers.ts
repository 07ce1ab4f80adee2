// Real tern daemons and CLI runs for the host tests: every process spawned here is tracked by PID
// and killed by killAll() (call it from after()).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { withHugePages } from '../../src/util/huge-pages.js';

/** The built CLI (tests run from dist/test/host/). */
export const TERN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
/** The `tern` command as npm installs it (a shell script that starts Node; package.json's bin). */
export const TERN_BIN = fileURLToPath(new URL('../../../bin/tern', import.meta.url));

/** Whether this build has the migration engine (src/migration/source.ts, destination.ts). */
export const HAS_ENGINE =
  existsSync(fileURLToPath(new URL('../../src/migration/source.js', import.meta.url))) &&
  existsSync(fileURLToPath(new URL('../../src/migration/destination.js', import.meta.url)));

const children = new Set<ChildProcess>();

/** Kills (SIGKILL, by PID) every process these helpers started that is still alive. */
export function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  children.clear();
}

export interface Daemon {
  readonly name: string;
  /** host:port of the management API. */
  readonly api: string;
  readonly migration: string | null;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** Resolves with the exit code (or signal) once the process ends. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

/**
 * Starts `tern host serve` on free ports (port 0) and waits for its start line. `viaBin`: through
 * bin/tern, as a user's `npx tern` does, rather than Node on main.js with withHugePages' environment.
 */
export function startDaemon(name: string, extra: string[] = [], timeoutMs = 20_000, env: Record<string, string> = {}, viaBin = false): Promise<Daemon> {
  const args = ['host', 'serve', '--listen', '127.0.0.1:0', '--name', name, '--json', ...extra];
  const withEnv = { ...process.env, TERN_LOG: process.env.TERN_LOG ?? 'warn', ...env };
  const proc = viaBin
    ? spawn(TERN_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: withEnv })
    : spawn(process.execPath, [TERN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: withHugePages(withEnv) });
  children.add(proc);
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`tern host serve ${name} did not start within ${timeoutMs} ms: ${err}`));
    }, timeoutMs);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try {
        const a = JSON.parse(out.slice(0, nl)) as { name: string; api: string; migration: string | null; pid: number };
        resolve({ ...a, proc, exited, stderr: () => err });
      } catch (e) {
        reject(new Error(`bad start line ${out.slice(0, nl)}: ${String(e)}`));
      }
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`tern host serve ${name} exited (${code}) before serving: ${err}`));
    });
  });
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `tern ARGS` to completion; killed after timeoutMs. */
export function tern(args: string[], timeoutMs = 60_000): Promise<CliResult> {
  return ternBackground(args, timeoutMs).result;
}

/** Starts `tern ARGS`; `stop()` sends SIGINT (as Ctrl-C would); killed after timeoutMs. */
export function ternBackground(args: string[], timeoutMs = 60_000): { result: Promise<CliResult>; stop: () => void; stdout: () => string; stderr: () => string } {
  let child: ChildProcess | undefined;
  let stdout = '';
  let stderr = '';
  const result = new Promise<CliResult>((resolve, reject) => {
    const c = spawn(process.execPath, [TERN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TERN_HOST: '' } });
    child = c;
    children.add(c);
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString('latin1')));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      children.delete(c);
      resolve({ code, stdout, stderr });
    });
  });
  return { result, stop: () => child?.kill('SIGINT'), stdout: () => stdout, stderr: () => stderr };
}

/** Runs `tern ARGS --json` and parses its stdout (throws with the output when it is not JSON). */
export async function ternJson<T>(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; value: T; stderr: string }> {
  const r = await tern([...args, '--json'], timeoutMs);
  try {
    return { code: r.code, value: JSON.parse(r.stdout) as T, stderr: r.stderr };
  } catch {
    throw new Error(`tern ${args.join(' ')} --json: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`);
  }
}

export interface HttpResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  json<T = unknown>(): T;
}

/** One raw HTTP request to a daemon; `body` a string/Buffer as is, anything else as JSON. */
export function http(addr: string, method: string, path: string, body?: unknown, opts: { headers?: Record<string, string | number>; timeoutMs?: number } = {}): Promise<HttpResult> {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const payload = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const chunked = opts.headers?.['transfer-encoding'] === 'chunked';
    const req = request({ host, port, method, path, headers: { ...(payload !== undefined && !chunked ? { 'content-length': payload.length } : {}), ...opts.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('latin1');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: <T>() => JSON.parse(text) as T });
      });
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 30_000, () => req.destroy(new Error(`${method} ${path}: timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` until it is truthy or timeoutMs passes; returns its last value. */
export async function waitFor<T>(cond: () => Promise<T> | T, timeoutMs: number, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v || Date.now() > end) return v;
    await sleep(everyMs);
  }
}

export function count(s: string, ch: string): number {
  let n = 0;
  for (let i = s.indexOf(ch); i >= 0; i = s.indexOf(ch, i + 1)) n++;
  return n;
}
