// A guest on the real QEMU with a QMP socket: console output collected, QMP commands awaited,
// the process killed by PID in `stop`. For the guest-driver tests (balloon today).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QEMU } from '../../bench/qemu.js';
import { sleep } from '../helpers/images.js';

export type QmpReply = Record<string, unknown>;

export class QemuGuest {
  output = '';
  stderr = '';
  exitCode: number | null = null;
  private readonly child: ChildProcess;
  private readonly dir: string;
  private sock: Socket | undefined;
  private buf = '';
  private waiters: ((r: QmpReply) => void)[] = [];
  readonly exited: Promise<number | null>;

  constructor(image: string, append: string, extra: readonly string[], mem = '256M') {
    this.dir = mkdtempSync(join(tmpdir(), 'tern-guest-'));
    this.child = spawn(QEMU, ['-M', 'virt', '-bios', 'none', '-kernel', image, '-display', 'none', '-monitor', 'none',
      '-serial', 'stdio', '-m', mem, '-global', 'virtio-mmio.force-legacy=false', ...extra,
      '-qmp', `unix:${join(this.dir, 'qmp')},server=on,wait=off`, '-append', append], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (d: Buffer) => (this.output += d.toString('latin1')));
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString('latin1')));
    this.exited = new Promise((r) => this.child.once('exit', (code) => { this.exitCode = code; r(code); }));
  }

  /** Connects to QMP (retrying while QEMU starts) and leaves command mode enabled. */
  async connect(timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        this.sock = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(join(this.dir, 'qmp'));
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        break;
      } catch (e) {
        if (Date.now() > end || this.exitCode !== null) throw new Error(`QMP: cannot connect (${String(e)}); stderr: ${this.stderr}`);
        await sleep(50);
      }
    }
    this.sock.on('data', (d: Buffer) => {
      this.buf += d.toString('utf8');
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const msg = JSON.parse(line) as QmpReply;
        if ('return' in msg || 'error' in msg) this.waiters.shift()?.(msg);
      }
    });
    await this.qmp('qmp_capabilities');
  }

  async qmp(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<QmpReply> {
    const sock = this.sock;
    if (!sock) throw new Error('QMP not connected');
    const reply = new Promise<QmpReply>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`QMP ${command}: no reply in ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push((r) => { clearTimeout(t); resolve(r); });
    });
    sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    const r = await reply;
    if ('error' in r) throw new Error(`QMP ${command}: ${JSON.stringify(r.error)}`);
    return (r.return ?? {}) as QmpReply;
  }

  async stop(): Promise<void> {
    this.sock?.destroy();
    if (this.exitCode === null && this.child.pid !== undefined) {
      try { process.kill(this.child.pid, 'SIGKILL'); } catch { /* gone */ }
      await this.exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Polls `probe` every 100 ms until it returns true or `timeoutMs` passes. */
export async function eventually(probe: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await probe()) return true;
    await sleep(100);
  }
  return probe();
}
