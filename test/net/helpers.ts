// Real gateways, hosts and clients for the network tests. Every process spawned here is tracked
// by PID and killed by killGateways() (call it, and the host helpers' killAll(), from after()).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import assert from 'node:assert/strict';
import { TERN, sleep, waitFor } from '../host/helpers.js';

const gateways = new Set<ChildProcess>();

export interface GatewayProc {
  readonly listen: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** Status lines printed so far (serve --json). */
  lines(): Record<string, unknown>[];
  stderr(): string;
  readonly exited: Promise<number | null>;
}

export function killGateways(): void {
  for (const g of gateways) {
    if (g.exitCode === null && g.signalCode === null && g.pid !== undefined) {
      try {
        process.kill(g.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  gateways.clear();
}

/** Starts `tern gateway serve --json` and waits for its start line. */
export function startGateway(args: string[] = [], listen = '127.0.0.1:0', timeoutMs = 15_000): Promise<GatewayProc> {
  const proc = spawn(process.execPath, [TERN, 'gateway', 'serve', '--listen', listen, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TERN_LOG: process.env.TERN_LOG ?? 'warn' } });
  gateways.add(proc);
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const lines = (): Record<string, unknown>[] => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${err}`)), timeoutMs);
    proc.stdout!.on('data', (d: Buffer) => {
      const first = out.length === 0 || !out.includes('\n');
      out += d.toString();
      if (first && out.includes('\n')) {
        clearTimeout(timer);
        const l = lines()[0]!;
        resolve({ listen: l['listen'] as string, pid: proc.pid!, proc, lines, stderr: () => err, exited });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code}) before serving: ${err}`));
    });
  });
}

/** A TCP port free right now on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Connects to 127.0.0.1:port, retrying until it answers (the gateway listens once the VM is announced). */
export async function connectRetry(port: number, timeoutMs = 10_000): Promise<Socket> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (e) {
      if (Date.now() > end) throw e;
      await sleep(100);
    }
  }
}

/** One RESP command as redis-cli sends it. */
export function resp(...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
}

/** Runs a command to completion (redis-cli, curl, wrk ...), killed after timeoutMs. */
export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return background(cmd, args, timeoutMs).done;
}

/** Starts a command in the background; `done` resolves when it ends. */
export function background(cmd: string, args: string[], timeoutMs = 120_000): { done: Promise<{ code: number | null; stdout: string; stderr: string }>; kill: () => void } {
  let child: ChildProcess | undefined;
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    gateways.add(c); // killed in teardown like the gateways
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(t);
      gateways.delete(c);
      resolve({ code, stdout, stderr });
    });
  });
  return { done, kill: () => child?.kill('SIGKILL') };
}

/**
 * A pipelined RESP stream with known bytes both ways: SET k<i> v<i>, GET k<i>; every reply byte
 * is checked against what the server must answer, in order.
 */
export class ExactStream {
  sent = 0;
  verified = 0;
  error: string | undefined;
  private expected = '';
  private got = '';
  private i = 0;
  private stopped = false;
  closed = false;

  constructor(private readonly sock: Socket, private readonly prefix: string) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', (e) => (this.error ??= `socket error: ${e.message}`));
    sock.on('close', () => {
      this.closed = true;
      if (!this.stopped) this.error ??= 'connection closed';
    });
    this.pump();
  }

  private value(i: number): string {
    // 1..3000 bytes of content that depends on i, so a byte out of place shows.
    const len = 1 + ((i * 7919) % 3000);
    let s = '';
    while (s.length < len) s += `${i}:${s.length};`;
    return s.slice(0, len);
  }

  private pump(): void {
    if (this.stopped || this.error !== undefined) return;
    // Keep about 64 KiB of replies outstanding.
    let out = '';
    while (this.expected.length - this.got.length < 64 * 1024 && out.length < 64 * 1024) {
      // A bounded key space: the guest's memory holds the last 256 values.
      const k = `${this.prefix}${this.i % 256}`;
      const v = this.value(this.i);
      out += resp('SET', k, v) + resp('GET', k);
      this.expected += '+OK\r\n' + `$${v.length}\r\n${v}\r\n`;
      this.i++;
    }
    if (out.length > 0) {
      this.sent += out.length;
      this.sock.write(out, 'latin1');
    }
  }

  private onData(d: string): void {
    this.got += d;
    const n = Math.min(this.got.length, this.expected.length);
    if (this.got.slice(0, n) !== this.expected.slice(0, n)) {
      let at = 0;
      while (at < n && this.got[at] === this.expected[at]) at++;
      this.error ??= `reply byte ${this.verified + at} differs: got ${JSON.stringify(this.got.slice(at, at + 40))}, expected ${JSON.stringify(this.expected.slice(at, at + 40))}`;
      return;
    }
    if (this.got.length > this.expected.length) {
      this.error ??= 'more reply bytes than requests';
      return;
    }
    this.verified += n;
    this.got = this.got.slice(n);
    this.expected = this.expected.slice(n);
    if (this.expected.length < 32 * 1024) this.pump();
  }

  /** Waits until the stream has moved on by `bytes` more verified bytes. */
  async progress(bytes: number, timeoutMs = 20_000): Promise<void> {
    const target = this.verified + bytes;
    const ok = await waitFor(() => this.verified >= target || this.error !== undefined, timeoutMs);
    assert.equal(this.error, undefined);
    assert.ok(ok, `stream stalled at ${this.verified} verified bytes`);
  }

  stop(): void {
    this.stopped = true;
    this.sock.destroy();
  }
}

