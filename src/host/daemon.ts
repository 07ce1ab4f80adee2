/**
 * `tern host serve`: one long-running process holding the VMs of one host, with the management
 * API on one address and the migration data listener on another.
 */
import { readFileSync } from 'node:fs';
import { formatHostPort, type HostPort } from './address.js';
import { ManagementApi } from './api.js';
import { MigrationServer } from '../migration/destination.js';
import { Host, newVmDevices } from './host.js';
import type { VcpuTraining } from '../machine/vcpu/messages.js';
import { IncomingVms } from './incoming.js';
import { Migrations } from './migrations.js';
import { warmUpEngine } from './engine-warm-up.js';
import { createLogger, type Logger } from '../util/log.js';

export interface DaemonOptions {
  readonly name: string;
  readonly listen: HostPort;
  /** Default: the API host, port + 1000 (any free port when the API port is 0). */
  readonly migrationListen?: HostPort;
  readonly maxMemBytes: number;
  /** RAM of departed VMs kept for reuse (default 512 MiB; 0: none). */
  readonly ramPoolBytes?: number;
  /** See HostOptions.preallocRam. */
  readonly preallocRam?: readonly number[];
  /** vCPU threads of departed VMs kept for the next VM of the same image (default 2; 0: none). */
  readonly warmThreads?: number;
  /** See HostOptions.warmUpMs. */
  readonly warmUpMs?: number;
  /** Concurrent incoming migrations accepted. */
  readonly maxIncoming?: number;
  /** Compile the migration paths at start with a few loopback migrations of a synthetic VM (engine-warm-up.ts). Default true. */
  readonly engineWarmUp?: boolean;
  /** Keep one new vCPU thread started ahead of need (default true; thread-pool.ts). */
  readonly spareThread?: boolean;
  readonly log?: Logger;
}

/** The guest whose instruction paths a spare thread runs first: the ISA self-test, if this install has it. */
const TRAINING_IMAGE = new URL('../../../guests/images/selftest.elf', import.meta.url);
/**
 * At most how long a spare thread runs it; it exits when done (0.2-0.3 s on a cold thread here).
 * Cut at 150 ms it had not reached remu or wfi, and a VM's first of those after its resume
 * discarded the compiled loop.
 */
const TRAINING_MS = 2000;
const TRAINING_RAM_BYTES = 64 * 1024 * 1024;

/** What each spare vCPU thread runs first (ThreadPool.startSpare); undefined without the image. */
function spareTraining(): VcpuTraining['train'] | undefined {
  let image: Uint8Array;
  try {
    image = readFileSync(TRAINING_IMAGE);
  } catch {
    return undefined;
  }
  return { boot: { image, imageName: 'selftest.elf', bootargs: '' }, ramBytes: TRAINING_RAM_BYTES, devices: newVmDevices(), ms: TRAINING_MS };
}

/** Where a daemon ended up listening. */
export interface DaemonAddresses {
  readonly name: string;
  readonly api: string;
  readonly migration: string | null;
  readonly pid: number;
}

export class ListenError extends Error {
  constructor(what: string, addr: HostPort, cause: NodeJS.ErrnoException) {
    const why = cause.code === 'EADDRINUSE' ? 'the address is already in use' : cause.code === 'EADDRNOTAVAIL' ? 'no such local address' : cause.code === 'EACCES' ? 'permission denied' : cause.message;
    super(`cannot listen for ${what} on ${formatHostPort(addr)}: ${why}`);
    this.name = 'ListenError';
  }
}

export class Daemon {
  readonly host: Host;
  readonly migrations: Migrations;
  readonly incoming: IncomingVms;
  readonly api: ManagementApi;
  readonly log: Logger;
  private migrationServer: MigrationServer | undefined;
  private apiAddr = '';
  private migrationAddr: string | null = null;
  private stopping: Promise<void> | undefined;
  /** The engine warm-up started with the daemon, until it ends. */
  private engineWarmUp: Promise<void> | undefined;

  constructor(private readonly opts: DaemonOptions) {
    // 'hostName', not 'host': the engine logs peer addresses as host/port.
    this.log = opts.log ?? createLogger({ hostName: opts.name });
    this.host = new Host({ name: opts.name, maxMemBytes: opts.maxMemBytes, ...(opts.ramPoolBytes !== undefined ? { ramPoolBytes: opts.ramPoolBytes } : {}), ...(opts.preallocRam !== undefined ? { preallocRam: opts.preallocRam } : {}), ...(opts.warmThreads !== undefined ? { warmThreads: opts.warmThreads } : {}), ...(opts.warmUpMs !== undefined ? { warmUpMs: opts.warmUpMs } : {}), log: this.log });
    this.migrations = new Migrations(this.host);
    this.incoming = new IncomingVms(this.host);
    this.api = new ManagementApi({
      host: this.host,
      migrations: this.migrations,
      apiAddress: () => this.apiAddr,
      migrationAddress: () => this.migrationAddr,
      incomingCount: () => this.incoming.count,
    });
  }

  async start(): Promise<DaemonAddresses> {
    const { listen } = this.opts;
    let api: HostPort;
    try {
      api = await this.api.listen(listen.port, listen.host);
    } catch (e) {
      throw new ListenError('the management API', listen, e as NodeJS.ErrnoException);
    }
    this.apiAddr = formatHostPort(api);
    const mig = this.opts.migrationListen ?? { host: listen.host, port: listen.port === 0 ? 0 : listen.port + 1000 };
    const server = new MigrationServer(this.incoming, { name: this.host.name, log: this.log, maxSessions: this.opts.maxIncoming ?? 4 });
    server.on('activated', (vm, info) => this.migrations.incomingActivated(vm, info, this.incoming.takeReservedAt(vm)));
    server.on('failed', (vm, error) => this.migrations.incomingFailed(vm, error, this.incoming.takeReservedAt(vm)));
    server.on('postcopy', (vm, info) => this.migrations.incomingPostcopy(vm, info));
    try {
      const bound = await server.listen(mig.port, mig.host);
      this.migrationAddr = formatHostPort(bound);
      this.migrationServer = server;
    } catch (e) {
      await this.api.close(100);
      throw new ListenError('migrations', mig, e as NodeJS.ErrnoException);
    }
    this.log.info({ api: this.apiAddr, migration: this.migrationAddr, maxMemBytes: this.opts.maxMemBytes, hugePages: this.host.hugePages.note }, 'host serving');
    if (this.opts.engineWarmUp !== false) this.engineWarmUp = warmUpEngine(this.log, () => this.stopping !== undefined);
    // The spare thread starts after the engine warm-up: both at once would only slow each other.
    const migrating = (): boolean => this.migrations.activeOutgoing > 0 || this.incoming.count > 0;
    if (this.opts.spareThread !== false) void (this.engineWarmUp ?? Promise.resolve()).then(() => this.host.threads.startSpare(migrating, spareTraining()));
    return { name: this.host.name, api: this.apiAddr, migration: this.migrationAddr, pid: process.pid };
  }

  /** Stops accepting requests and migrations, cancels outgoing ones, stops every VM. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info({ vms: this.host.list().length }, 'host stopping');
      this.host.refuseNew();
      const apiClosed = this.api.close(2000);
      // It stops between its migrations; one in flight ends within a second or so.
      if (this.engineWarmUp !== undefined) await Promise.race([this.engineWarmUp, new Promise((r) => setTimeout(r, 3000).unref())]);
      await this.migrations.cancelAll(3000);
      await this.migrationServer?.close().catch((e: unknown) => this.log.warn({ err: String(e) }, 'closing the migration listener failed'));
      await this.host.shutdown();
      await apiClosed;
      this.log.info('host stopped');
    })();
    return this.stopping;
  }
}
