import { randomBytes } from 'node:crypto';
import type { MigrationProgress, MigrationReport } from '../migration/report.js';
import type { IncomingVm } from '../migration/vm-port.js';
import { AddressError, formatHostPort, isWildcard, parseHostPort, type HostPort } from './address.js';
import type { HostInfo, MigrationInfo, MigrationStarted, StartMigrationRequest } from './api-types.js';
import { OutgoingMigration, type MigrateOptions } from '../migration/source.js';
import { DEFAULT_XBZRLE_CACHE_BYTES } from '../migration/encoding/xbzrle.js';
import { ApiFailure } from './errors.js';
import type { Host } from './host.js';
import type { HostedVm } from './hosted-vm.js';
import { errorMessageOf, requestJson, UnreachableError, NotTernError } from './http-json.js';

/** What a migration uses when the request does not say (QEMU's defaults where it has them). */
export const MIGRATION_DEFAULTS = {
  /** 0 = unlimited. */
  maxBandwidthBps: 0,
  /** Floor of Clark's dynamic rate limit (round 1 runs at it); 0 = no floor, round 1 at the maximum. */
  minBandwidthBps: 0,
  /** QEMU's default downtime-limit. */
  downtimeLimitMs: 300,
  maxRounds: 30,
  verifyRam: false,
  /** 0 = none. */
  timeoutMs: 600_000,
  /** Free page hinting when the guest's balloon driver offers it (QEMU's free-page-hint). */
  freePageHint: true,
  /** XBZRLE switched on when pre-copy stops converging (docs/precopy.md). */
  xbzrleFallback: true,
  /** Consecutive raw pages as PAGE_RUN frames, straight from and into guest RAM (docs/precopy.md). */
  pageRuns: true,
} as const;

/** Finished migrations kept for GET /v1/migrations, per direction. */
const KEEP_FINISHED = 100;
/** At most this many progress events per second per migration on GET /v1/events. */
const PROGRESS_EVENT_INTERVAL_MS = 200;
/** How long POST /v1/migrations with resume waits for the source to reconnect. */
const RESUME_WAIT_MS = 15_000;
/** How long to wait for the destination host's API while setting a migration up. */
const PEER_TIMEOUT_MS = 5000;

interface OutgoingRecord {
  readonly id: string;
  readonly vm: HostedVm;
  readonly destination: string;
  readonly to: string;
  readonly startedAt: Date;
  readonly migration: OutgoingMigration;
  progress: MigrationProgress | undefined;
  report: MigrationReport | undefined;
  finishedAt: Date | undefined;
  lastEventAt: number;
  lastEventKey: string;
  done: Promise<void>;
}

function newId(taken: (id: string) => boolean): string {
  for (;;) {
    const id = randomBytes(4).toString('hex');
    if (!taken(id)) return id;
  }
}

/** Migrations of this host: outgoing ones it runs as the source, incoming ones it received. */
export class Migrations {
  private readonly outgoing = new Map<string, OutgoingRecord>();
  private readonly incoming: MigrationInfo[] = [];

  constructor(private readonly host: Host) {}

  get activeOutgoing(): number {
    let n = 0;
    for (const r of this.outgoing.values()) if (r.report === undefined) n++;
    return n;
  }

  /** POST /v1/migrations: checks everything it can up front, then runs the migration in the background. */
  async start(req: StartMigrationRequest): Promise<MigrationStarted> {
    const host = this.host;
    if (host.shuttingDown) throw new ApiFailure(503, 'shutting-down', `host ${host.name} is shutting down`);
    if (req.resume === true) return this.resume(req);
    if (req.xbzrleCacheBytes !== undefined && req.xbzrle !== true) throw ApiFailure.badRequest("start migration: 'xbzrleCacheBytes' needs 'xbzrle': true");
    if ((req.streams ?? 1) > 1 && (req.mode ?? 'precopy') !== 'precopy') throw ApiFailure.badRequest(`start migration: 'streams' > 1 is for pre-copy only, not ${req.mode ?? 'precopy'}`);
    if (req.stun === true && (req.mode ?? 'precopy') !== 'precopy') throw ApiFailure.badRequest(`start migration: 'stun' is for pre-copy only, not ${req.mode ?? 'precopy'}`);
    if (req.stunBudgetBps !== undefined && req.stun !== true) throw ApiFailure.badRequest("start migration: 'stunBudgetBps' needs 'stun': true");
    this.checkMigratable(host.get(req.vm));
    const { to, peer, dataAddr } = await this.destination(req.to, req.vm, true);

    // The VM may have changed while we asked the destination.
    const vm = host.get(req.vm);
    this.checkMigratable(vm);
    const id = newId((x) => this.outgoing.has(x) || this.incoming.some((m) => m.id === x));
    const opts: MigrateOptions = {
      id,
      sourceName: host.name,
      destinationName: peer.name,
      destination: dataAddr,
      mode: req.mode ?? 'precopy',
      ...(req.precopyRounds !== undefined ? { precopyRounds: req.precopyRounds } : {}),
      ...(req.prepaging !== undefined ? { prepaging: req.prepaging } : {}),
      maxBandwidthBps: req.maxBandwidthBps ?? MIGRATION_DEFAULTS.maxBandwidthBps,
      ...(req.stopCopyBandwidthBps !== undefined ? { stopCopyBandwidthBps: req.stopCopyBandwidthBps } : {}),
      ...(req.guestClock !== undefined ? { guestClock: req.guestClock } : {}),
      minBandwidthBps: req.minBandwidthBps ?? MIGRATION_DEFAULTS.minBandwidthBps,
      ...(req.rateIncrementBps !== undefined && req.rateIncrementBps > 0 ? { rateIncrementBps: req.rateIncrementBps } : {}),
      downtimeLimitMs: req.downtimeLimitMs ?? MIGRATION_DEFAULTS.downtimeLimitMs,
      maxRounds: req.maxRounds ?? MIGRATION_DEFAULTS.maxRounds,
      verifyRam: req.verifyRam ?? MIGRATION_DEFAULTS.verifyRam,
      timeoutMs: req.timeoutMs ?? MIGRATION_DEFAULTS.timeoutMs,
      ...(req.autoConverge === true ? { autoConverge: true } : {}),
      ...(req.xbzrle === true ? { xbzrleCacheBytes: req.xbzrleCacheBytes ?? DEFAULT_XBZRLE_CACHE_BYTES } : {}),
      ...(req.compression !== undefined ? { compression: req.compression } : {}),
      ...(req.streams !== undefined ? { streams: req.streams } : {}),
      freePageHint: req.freePageHint ?? MIGRATION_DEFAULTS.freePageHint,
      pageRuns: req.pageRuns ?? MIGRATION_DEFAULTS.pageRuns,
      xbzrleFallback: req.xbzrleFallback ?? MIGRATION_DEFAULTS.xbzrleFallback,
      ...(req.stun === true ? { stun: true, ...(req.stunBudgetBps !== undefined ? { stunBudgetBps: req.stunBudgetBps } : {}) } : {}),
      // The engine adds the migration id, VM and peer to its log lines itself.
      log: host.log,
    };
    if (opts.maxBandwidthBps > 0 && opts.minBandwidthBps > opts.maxBandwidthBps) {
      // A floor above the ceiling means the ceiling.
      (opts as { minBandwidthBps: number }).minBandwidthBps = opts.maxBandwidthBps;
    }
    const migration = new OutgoingMigration(vm, opts);
    vm.migrationId = id;
    const rec: OutgoingRecord = {
      id,
      vm,
      destination: peer.name,
      to: formatHostPort(to),
      startedAt: new Date(),
      migration,
      progress: undefined,
      report: undefined,
      finishedAt: undefined,
      lastEventAt: 0,
      lastEventKey: '',
      done: Promise.resolve(),
    };
    this.outgoing.set(id, rec);
    migration.on('progress', (p) => this.onProgress(rec, p));
    host.log.info({ migration: id, vm: vm.name, destination: peer.name, to: rec.to, data: formatHostPort(dataAddr), ...numericOpts(opts) }, 'migration started');
    host.events.publish({ type: 'migration.started', vm: vm.name, migration: id, destination: peer.name });
    rec.done = this.run(rec);
    return { id, vm: vm.name, source: host.name, destination: peer.name, to: rec.to, location: `/v1/migrations/${id}` };
  }

  /**
   * POST /v1/migrations with resume: reconnects this VM's post-copy that a broken connection
   * paused (`tern migrate --resume`). The destination's migration address is asked again.
   */
  private async resume(req: StartMigrationRequest): Promise<MigrationStarted> {
    const rec = [...this.outgoing.values()].find((r) => r.vm.name === req.vm && r.report === undefined);
    if (rec === undefined) throw ApiFailure.notFound(`no migration of VM '${req.vm}' is in progress on host ${this.host.name}`);
    const status = rec.migration.progress().status;
    if (status !== 'postcopy-paused') throw ApiFailure.conflict(`migration ${rec.id} of '${req.vm}' is ${status}, not postcopy-paused; only a paused post-copy can be resumed`);
    const { peer, dataAddr } = await this.destination(req.to, req.vm, false);
    const outcome = rec.migration.nextResumeOutcome();
    if (!rec.migration.resume(dataAddr)) throw ApiFailure.conflict(`migration ${rec.id} of '${req.vm}' is no longer paused`);
    this.host.log.info({ migration: rec.id, vm: req.vm, data: formatHostPort(dataAddr) }, 'post-copy resume requested');
    // Answer once the source has reconnected (or could not): a failed attempt leaves it paused.
    let timer: NodeJS.Timeout | undefined;
    const error = await Promise.race([outcome, new Promise<string>((r) => (timer = setTimeout(() => r(`no answer from ${peer.name} within ${RESUME_WAIT_MS} ms`), RESUME_WAIT_MS)))]);
    clearTimeout(timer);
    if (error !== undefined) throw new ApiFailure(502, 'peer-error', `resuming migration ${rec.id} of '${req.vm}' failed: ${error}; it stays postcopy-paused`);
    return { id: rec.id, vm: req.vm, source: this.host.name, destination: peer.name, to: rec.to, location: `/v1/migrations/${rec.id}` };
  }

  /**
   * The destination's API address (`to`), who it is, and where its migration listener takes
   * data (a wildcard listen address is reached at the API's host). `mustNotHave`: refuse a
   * destination that already has a VM of that name (a resume goes to the one that has it).
   */
  private async destination(toText: string, vmName: string, mustNotHave: boolean): Promise<{ to: HostPort; peer: HostInfo & { migration: string }; dataAddr: HostPort }> {
    let to: HostPort;
    try {
      to = parseHostPort(toText, 'to');
    } catch (e) {
      if (e instanceof AddressError) throw ApiFailure.badRequest(e.message);
      throw e;
    }
    const peer = await this.askPeer(to, vmName, mustNotHave);
    let migrationAddr: HostPort;
    try {
      migrationAddr = parseHostPort(peer.migration, 'migration address');
    } catch {
      throw new ApiFailure(502, 'peer-error', `destination host ${peer.name} gave an unusable migration address '${peer.migration}'`);
    }
    const dataAddr: HostPort = isWildcard(migrationAddr.host) ? { host: to.host, port: migrationAddr.port } : migrationAddr;
    return { to, peer, dataAddr };
  }

  private checkMigratable(vm: HostedVm): void {
    if (vm.ram.presence.absent > 0) throw ApiFailure.conflict(`VM '${vm.name}' is still receiving ${vm.ram.presence.absent} pages by post-copy; migrate it once that is complete`);
    const s = vm.status;
    if (s === 'running') return;
    if (s === 'migrating') throw ApiFailure.conflict(`VM '${vm.name}' is already migrating (migration ${vm.migrationId ?? '?'})`);
    if (s === 'paused') throw ApiFailure.conflict(`VM '${vm.name}' is paused; resume it before migrating it`);
    throw ApiFailure.conflict(`VM '${vm.name}' is ${s}; only a running VM can be migrated`);
  }

  /** Asks the destination's API who it is, where it takes migration data, and whether it already has the VM. */
  private async askPeer(to: HostPort, vmName: string, mustNotHave = true): Promise<HostInfo & { migration: string }> {
    const where = formatHostPort(to);
    let info: HostInfo;
    try {
      const r = await requestJson(to, 'GET', '/v1/host', { timeoutMs: PEER_TIMEOUT_MS });
      if (r.status !== 200) throw new ApiFailure(502, 'peer-error', `destination ${where} answered GET /v1/host with ${r.status}: ${errorMessageOf(r).message}`);
      info = r.body as HostInfo;
      if (info === null || typeof info !== 'object' || typeof info.name !== 'string' || !('migration' in info)) {
        throw new ApiFailure(502, 'peer-error', `destination ${where} did not describe itself as a tern host does`);
      }
      if (info.pid === process.pid && info.name === this.host.name && info.startedAt === this.host.startedAt.toISOString()) {
        throw ApiFailure.badRequest(`destination ${where} is this host (${this.host.name}); migrate to another host`);
      }
      if (info.migration === null) throw new ApiFailure(502, 'peer-error', `destination host ${info.name} (${where}) does not accept migrations (no migration engine)`);
      const has = mustNotHave ? await requestJson(to, 'GET', `/v1/vms/${encodeURIComponent(vmName)}`, { timeoutMs: PEER_TIMEOUT_MS }) : undefined;
      if (has?.status === 200) throw ApiFailure.conflict(`destination host ${info.name} (${where}) already has a VM named '${vmName}'`, 'exists');
    } catch (e) {
      if (e instanceof UnreachableError || e instanceof NotTernError) throw new ApiFailure(502, 'unreachable', `destination: ${e.message}`);
      throw e;
    }
    return info as HostInfo & { migration: string };
  }

  private onProgress(rec: OutgoingRecord, p: MigrationProgress): void {
    rec.progress = p;
    const now = Date.now();
    const key = `${p.status}/${p.stage}/${p.round}`;
    if (key === rec.lastEventKey && now - rec.lastEventAt < PROGRESS_EVENT_INTERVAL_MS) return;
    rec.lastEventAt = now;
    rec.lastEventKey = key;
    this.host.events.publish({ type: 'migration.progress', vm: rec.vm.name, migration: rec.id, progress: p });
  }

  private async run(rec: OutgoingRecord): Promise<void> {
    const host = this.host;
    const m = rec.migration;
    let report: MigrationReport;
    try {
      report = await m.run();
    } catch (e) {
      // run() is documented never to reject; if it does, say so rather than lose the record.
      report = syntheticFailure(rec, host.name, e);
    }
    try {
      rec.progress = m.progress();
    } catch {
      // keep the last progress event
    }
    rec.report = report;
    rec.finishedAt = new Date();
    const vm = rec.vm;
    if (m.committed || report.status === 'completed') {
      // Past commitment the destination owns the VM: never run it here again.
      await host.handedOver(vm, rec.id, rec.destination, rec.to).catch((e: unknown) => host.log.error({ vm: vm.name, err: String(e) }, 'stopping the migrated VM failed'));
      host.log.info({ migration: rec.id, vm: vm.name, status: report.status, totalTimeMs: report.totalTimeMs, downtimeMs: report.downtimeMs, rounds: report.rounds }, 'migration completed; VM handed over');
    } else {
      host.log.warn({ migration: rec.id, vm: vm.name, status: report.status, error: report.error }, 'migration did not complete; VM stays here');
    }
    vm.migrationId = undefined;
    const type = report.status === 'completed' ? 'migration.completed' : report.status === 'cancelled' ? 'migration.cancelled' : 'migration.failed';
    host.events.publish({ type, vm: vm.name, migration: rec.id, report });
    this.trim();
  }

  private trim(): void {
    const finished = [...this.outgoing.values()].filter((r) => r.report !== undefined);
    for (let i = 0; i < finished.length - KEEP_FINISHED; i++) this.outgoing.delete(finished[i]!.id);
    while (this.incoming.length > KEEP_FINISHED) this.incoming.shift();
  }

  list(): MigrationInfo[] {
    const all = [...[...this.outgoing.values()].map((r) => this.describe(r)), ...this.incoming];
    return all.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  get(id: string): MigrationInfo {
    const r = this.outgoing.get(id);
    if (r !== undefined) return this.describe(r);
    const i = this.incoming.find((m) => m.id === id);
    if (i !== undefined) return i;
    throw ApiFailure.notFound(`no migration ${id} on host ${this.host.name}`);
  }

  cancel(id: string): MigrationInfo {
    const r = this.outgoing.get(id);
    if (r === undefined) {
      if (this.incoming.some((m) => m.id === id)) throw ApiFailure.conflict(`migration ${id} is incoming; cancel it on its source host`);
      throw ApiFailure.notFound(`no migration ${id} on host ${this.host.name}`);
    }
    if (r.report !== undefined) throw ApiFailure.conflict(`migration ${id} has already finished (${r.report.status})`);
    this.host.log.info({ migration: id, vm: r.vm.name }, 'migration cancel requested');
    r.migration.cancel();
    return this.describe(r);
  }

  /** The engine's destination side activated a VM here. */
  /** A post-copy here changed state: the VM runs here while pages arrive, or waits for the source to resume. */
  incomingPostcopy(vm: IncomingVm, info: { migrationId: string; status: 'postcopy-active' | 'postcopy-paused'; missingPages: number }): void {
    this.host.pagesArriving(vm.name, true);
    const existing = this.incoming.find((m) => m.id === info.migrationId && m.direction === 'incoming');
    if (existing !== undefined) {
      existing.status = info.status;
      existing.missingPages = info.missingPages;
    } else {
      this.incoming.push({ id: info.migrationId, direction: 'incoming', vm: vm.name, status: info.status, destination: this.host.name, startedAt: new Date().toISOString(), missingPages: info.missingPages });
    }
    this.host.log.info({ migration: info.migrationId, vm: vm.name, status: info.status, missingPages: info.missingPages }, 'incoming post-copy');
  }

  incomingActivated(vm: IncomingVm, info: { downtimeMs: number; migrationId: string }, startedAt: Date | undefined): void {
    const now = new Date();
    this.host.pagesArriving(vm.name, false);
    const postcopy = this.incoming.findIndex((m) => m.id === info.migrationId && m.direction === 'incoming');
    if (postcopy >= 0) this.incoming.splice(postcopy, 1);
    this.incoming.push({
      id: info.migrationId,
      direction: 'incoming',
      vm: vm.name,
      status: 'completed',
      destination: this.host.name,
      startedAt: (startedAt ?? now).toISOString(),
      finishedAt: now.toISOString(),
      downtimeMs: info.downtimeMs,
    });
    this.trim();
    this.host.log.info({ migration: info.migrationId, vm: vm.name, downtimeMs: info.downtimeMs }, 'VM arrived by migration');
    this.host.events.publish({ type: 'vm.arrived', vm: vm.name, migration: info.migrationId, downtimeMs: info.downtimeMs });
  }

  incomingFailed(vm: IncomingVm | undefined, error: Error, startedAt: Date | undefined): void {
    const now = new Date();
    this.incoming.push({
      id: newId((x) => this.outgoing.has(x) || this.incoming.some((m) => m.id === x)),
      direction: 'incoming',
      vm: vm?.name ?? '(unknown)',
      status: 'failed',
      destination: this.host.name,
      startedAt: (startedAt ?? now).toISOString(),
      finishedAt: now.toISOString(),
      error: error.message,
    });
    this.trim();
    this.host.log.warn({ vm: vm?.name, err: error.message }, 'incoming migration failed');
    this.host.events.publish({ type: 'migration.incoming-failed', vm: vm?.name ?? null, message: error.message });
  }

  private describe(r: OutgoingRecord): MigrationInfo {
    const info: MigrationInfo = {
      id: r.id,
      direction: 'outgoing',
      vm: r.vm.name,
      status: r.report?.status ?? r.progress?.status ?? 'setup',
      source: this.host.name,
      destination: r.destination,
      to: r.to,
      startedAt: r.startedAt.toISOString(),
    };
    if (r.finishedAt !== undefined) info.finishedAt = r.finishedAt.toISOString();
    let progress = r.progress;
    if (r.report === undefined) {
      try {
        progress = r.migration.progress();
      } catch {
        // the last progress event will do
      }
    }
    if (progress !== undefined) info.progress = progress;
    if (r.report !== undefined) info.report = r.report;
    if (r.report?.error !== undefined) info.error = r.report.error.message;
    return info;
  }

  /** Shutdown: cancel every outgoing migration and wait (bounded) for them to end. */
  async cancelAll(waitMs: number): Promise<void> {
    const active = [...this.outgoing.values()].filter((r) => r.report === undefined);
    for (const r of active) r.migration.cancel();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(active.map((r) => r.done)), new Promise((res) => (timer = setTimeout(res, waitMs)))]);
    clearTimeout(timer);
  }
}

function numericOpts(o: MigrateOptions): Record<string, number | boolean> {
  return { maxBandwidthBps: o.maxBandwidthBps, stopCopyBandwidthBps: o.stopCopyBandwidthBps ?? o.maxBandwidthBps, minBandwidthBps: o.minBandwidthBps, rateIncrementBps: o.rateIncrementBps ?? 0, downtimeLimitMs: o.downtimeLimitMs, maxRounds: o.maxRounds, verifyRam: o.verifyRam, timeoutMs: o.timeoutMs, freePageHint: o.freePageHint !== false, pageRuns: o.pageRuns !== false };
}

function syntheticFailure(rec: OutgoingRecord, source: string, e: unknown): MigrationReport {
  const p = rec.progress;
  return {
    id: rec.id,
    vm: rec.vm.name,
    status: 'failed',
    mode: 'precopy',
    source,
    destination: rec.destination,
    totalTimeMs: Date.now() - rec.startedAt.getTime(),
    downtimeMs: 0,
    setupTimeMs: 0,
    rounds: p?.round ?? 0,
    ramBytes: rec.vm.memBytes,
    bytesTransferred: p?.bytesTransferred ?? 0,
    pagesTransferred: p?.pagesTransferred ?? 0,
    zeroPages: 0,
    expectedDowntimeMs: p?.expectedDowntimeMs ?? 0,
    maxBandwidthBps: 0,
    downtimeLimitMs: 0,
    switchoverReason: '',
    stateBytes: 0,
    perRound: [],
    error: { stage: p?.stage ?? 'reservation', message: `internal error in the migration engine: ${e instanceof Error ? e.message : String(e)}` },
  };
}
