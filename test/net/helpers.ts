// Real gateways, hosts and clients for the network tests. Every process spawned here is tracked
// by PID and killed by killGateways() (call it, and the host helpers' killAll(), from after()).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import { TERN, sleep } from '../host/helpers.js';

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
