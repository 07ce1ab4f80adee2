/**
 * The management API: HTTP+JSON on the host's listen address (docs/api.md, docs/openapi.json).
 * Every request is answered, errors included, with a JSON body; nothing a client sends can take
 * the daemon down.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { CreateVmRequest, HostEvent, SetBalloonRequest, StartMigrationRequest, VmInfo } from './api-types.js';
import { ApiFailure } from './errors.js';
import type { NumberedEvent } from './events.js';
import type { Host } from './host.js';
import type { Departure } from './hosted-vm.js';
import { MAX_IMAGE_BYTES, SMALL_BODY_LIMIT, VM_BODY_LIMIT, readJsonBody, sendFailure, sendJson } from './http.js';
import { VM_NAME_PATTERN } from './incoming.js';
import type { Migrations } from './migrations.js';
import { validate, type Schema } from './validate.js';
import { newVmNetwork } from './vm-net-setup.js';
import { DEFAULT_RAM_BYTES, MAX_RAM_BYTES, MIN_RAM_BYTES, PAGE_SIZE } from '../machine/memory/layout.js';

/** What the API needs besides the host: its own addresses, for GET /v1/host. */
export interface ApiContext {
  readonly host: Host;
  readonly migrations: Migrations;
  readonly apiAddress: () => string;
  readonly migrationAddress: () => string | null;
  readonly incomingCount: () => number;
}

const NAME_RULE = { type: 'string', required: true, pattern: VM_NAME_PATTERN, patternHint: "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit" } as const;

export const CREATE_VM: Schema = {
  name: NAME_RULE,
  image: { type: 'string', required: true, minLength: 1, maxLength: VM_BODY_LIMIT, pattern: /^[A-Za-z0-9+/]*={0,2}$/, patternHint: 'base64 of the image file' },
  imageName: { type: 'string', required: true, minLength: 1, maxLength: 255, pattern: /^[^/\\\0]+$/, patternHint: 'a file name without directories' },
  memBytes: { type: 'integer', min: MIN_RAM_BYTES, max: MAX_RAM_BYTES, multipleOf: PAGE_SIZE },
  bootArgs: { type: 'string', maxLength: 1024 },
  expose: { type: 'array', maxItems: 64, itemPattern: /^\d{1,5}:\d{1,10}$/, itemHint: 'HOSTPORT:VMPORT, e.g. 6379:6379' },
  gateway: { type: 'string', minLength: 1, maxLength: 300 },
};

export const START_MIGRATION: Schema = {
  vm: NAME_RULE,
  to: { type: 'string', required: true, minLength: 1, maxLength: 300 },
  maxBandwidthBps: { type: 'integer', min: 0, max: 1e15 },
  stopCopyBandwidthBps: { type: 'integer', min: 0, max: 1e15 },
  guestClock: { type: 'string', maxLength: 10, pattern: /^(continuous|frozen)$/, patternHint: 'continuous or frozen' },
  minBandwidthBps: { type: 'integer', min: 0, max: 1e15 },
  rateIncrementBps: { type: 'integer', min: 0, max: 1e15 },
  downtimeLimitMs: { type: 'integer', min: 1, max: 3_600_000 },
  maxRounds: { type: 'integer', min: 1, max: 10_000 },
  verifyRam: { type: 'boolean' },
  timeoutMs: { type: 'integer', min: 0, max: 86_400_000 },
  mode: { type: 'string', maxLength: 8, pattern: /^(precopy|postcopy|hybrid|auto)$/, patternHint: 'precopy, postcopy, hybrid or auto' },
  precopyRounds: { type: 'integer', min: 1, max: 10_000 },
  prepaging: { type: 'string', maxLength: 8, pattern: /^(linear|bubbling)$/, patternHint: 'linear or bubbling' },
  resume: { type: 'boolean' },
  autoConverge: { type: 'boolean' },
  xbzrle: { type: 'boolean' },
  xbzrleCacheBytes: { type: 'integer', min: 4096, max: 4 * 1024 * 1024 * 1024 },
  compression: { type: 'string', maxLength: 4, pattern: /^(lz4|zstd)$/, patternHint: 'lz4 or zstd' },
  streams: { type: 'integer', min: 1, max: 16 },
  stun: { type: 'boolean' },
  stunBudgetBps: { type: 'integer', min: 0, max: 1e15 },
  freePageHint: { type: 'boolean' },
  pageRuns: { type: 'boolean' },
  xbzrleFallback: { type: 'boolean' },
};

export const SET_BALLOON: Schema = {
  targetBytes: { type: 'integer', required: true, min: PAGE_SIZE, max: MAX_RAM_BYTES, multipleOf: PAGE_SIZE },
};

/** Bodies of POST .../pause, /resume, /cancel: nothing, or an empty object. */
const EMPTY: Schema = {};

/** A console follower that cannot keep up is dropped past this much unsent output. */
const FOLLOW_BACKLOG_LIMIT = 8 * 1024 * 1024;
const SSE_HEARTBEAT_MS = 15_000;

/** Every endpoint: path template -> methods (docs/openapi.json lists exactly these). */
export const API_ROUTES = {
  '/v1/host': ['GET'],
  '/v1/vms': ['GET', 'POST'],
  '/v1/vms/{name}': ['GET', 'DELETE'],
  '/v1/vms/{name}/pause': ['POST'],
  '/v1/vms/{name}/resume': ['POST'],
  '/v1/vms/{name}/console': ['GET'],
  '/v1/vms/{name}/balloon': ['POST'],
  '/v1/migrations': ['GET', 'POST'],
  '/v1/migrations/{id}': ['GET'],
  '/v1/migrations/{id}/cancel': ['POST'],
  '/v1/events': ['GET'],
} as const;

type RouteKey = { [P in keyof typeof API_ROUTES]: `${(typeof API_ROUTES)[P][number]} ${P}` }[keyof typeof API_ROUTES];

type Handler = (req: IncomingMessage, res: ServerResponse, params: string[], query: URLSearchParams) => Promise<void>;

interface Route {
  readonly pattern: RegExp;
  readonly methods: Partial<Record<string, Handler>>;
}

export class ManagementApi {
  readonly server: Server;
  private readonly routes: Route[];
  /** Open streaming answers (console follow, events), ended at shutdown. */
  private readonly streams = new Set<ServerResponse>();

  constructor(private readonly ctx: ApiContext) {
    const handlers: Record<RouteKey, Handler> = {
      'GET /v1/host': (_q, r) => this.getHost(r),
      'GET /v1/vms': (_q, r) => this.listVms(r),
      'POST /v1/vms': (q, r) => this.createVm(q, r),
      'GET /v1/vms/{name}': (_q, r, p) => this.getVm(r, p[0]!),
      'DELETE /v1/vms/{name}': (_q, r, p) => this.deleteVm(r, p[0]!),
      'POST /v1/vms/{name}/pause': (q, r, p) => this.pauseVm(q, r, p[0]!),
      'POST /v1/vms/{name}/resume': (q, r, p) => this.resumeVm(q, r, p[0]!),
      'GET /v1/vms/{name}/console': (q, r, p, qs) => this.console(q, r, p[0]!, qs),
      'POST /v1/vms/{name}/balloon': (q, r, p) => this.setBalloon(q, r, p[0]!),
      'GET /v1/migrations': (_q, r) => this.listMigrations(r),
      'POST /v1/migrations': (q, r) => this.startMigration(q, r),
      'GET /v1/migrations/{id}': (_q, r, p) => this.getMigration(r, p[0]!),
      'POST /v1/migrations/{id}/cancel': (q, r, p) => this.cancelMigration(q, r, p[0]!),
      'GET /v1/events': (q, r, _p, qs) => this.events(q, r, qs),
    };
    this.routes = Object.entries(API_ROUTES).map(([path, methods]) => ({
      pattern: new RegExp('^' + path.replace(/\{[a-z]+\}/g, '([^/]+)') + '$'),
      methods: Object.fromEntries(methods.map((m) => [m, handlers[`${m} ${path}` as RouteKey]])),
    }));
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      // Malformed HTTP: answer 400 when the socket still can, never throw.
      if (socket.writable && err.code !== 'ECONNRESET') {
        const body = JSON.stringify(new ApiFailure(400, 'bad-request', `malformed HTTP request: ${err.code ?? err.message}`).toBody());
        socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      } else {
        socket.destroy();
      }
    });
  }

  private get host(): Host {
    return this.ctx.host;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const method = req.method ?? 'GET';
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1));
    try {
      const route = this.routes.find((r) => r.pattern.test(path));
      if (route === undefined) throw ApiFailure.notFound(`no such endpoint: ${method} ${path} (the API is described in docs/api.md)`);
      const handler = route.methods[method];
      if (handler === undefined) {
        const allow = Object.keys(route.methods).join(', ');
        sendFailure(res, new ApiFailure(405, 'method-not-allowed', `${method} is not allowed on ${path} (allowed: ${allow})`), { allow });
        req.resume();
        return;
      }
      let params: string[];
      try {
        params = route.pattern.exec(path)!.slice(1).map((s) => decodeURIComponent(s));
      } catch {
        throw ApiFailure.badRequest(`malformed percent-encoding in ${path}`);
      }
      await handler(req, res, params, query);
    } catch (e) {
      if (e instanceof ApiFailure) {
        sendFailure(res, e);
      } else {
        this.host.log.error({ method, path, err: e instanceof Error ? (e.stack ?? e.message) : String(e) }, 'request failed');
        sendFailure(res, new ApiFailure(500, 'internal', `internal error: ${e instanceof Error ? e.message : String(e)}`));
      }
      // Whatever the client still sends is not ours to read.
      if (!req.complete) req.resume();
    } finally {
      this.host.log.debug({ method, path, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'request');
    }
  }

  /** For POSTs that take no parameters: an empty body or {} only. */
  private async emptyBody(req: IncomingMessage, what: string): Promise<void> {
    const body = await readJsonBody(req, SMALL_BODY_LIMIT);
    if (body !== undefined) validate(body, EMPTY, what);
  }

  private async getHost(res: ServerResponse): Promise<void> {
    sendJson(res, 200, this.ctx.host.info(this.ctx.apiAddress(), this.ctx.migrationAddress(), { outgoing: this.ctx.migrations.activeOutgoing, incoming: this.ctx.incomingCount() }));
  }

  private async listVms(res: ServerResponse): Promise<void> {
    const vms: VmInfo[] = await Promise.all(this.host.list().map((vm) => vm.info(this.host.name)));
    vms.sort((a, b) => a.name.localeCompare(b.name));
    sendJson(res, 200, { vms });
  }

  private async createVm(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = validate<CreateVmRequest>(await readJsonBody(req, VM_BODY_LIMIT), CREATE_VM, 'POST /v1/vms');
    if (body.image.length % 4 !== 0) throw ApiFailure.badRequest("POST /v1/vms: 'image' is not valid base64 (its length is not a multiple of 4)");
    const image = new Uint8Array(Buffer.from(body.image, 'base64'));
    if (image.length === 0) throw ApiFailure.badRequest("POST /v1/vms: 'image' is empty");
    if (image.length > MAX_IMAGE_BYTES) throw new ApiFailure(413, 'body-too-large', `POST /v1/vms: the image is ${image.length} bytes; at most ${MAX_IMAGE_BYTES} are accepted`);
    const vm = await this.host.create({
      name: body.name,
      image,
      imageName: body.imageName,
      memBytes: body.memBytes ?? DEFAULT_RAM_BYTES,
      bootArgs: body.bootArgs ?? '',
      network: newVmNetwork(body),
    });
    sendJson(res, 201, await vm.info(this.host.name), { location: `/v1/vms/${encodeURIComponent(vm.name)}` });
  }

  private async getVm(res: ServerResponse, name: string): Promise<void> {
    sendJson(res, 200, await this.host.get(name).info(this.host.name));
  }

  private async deleteVm(res: ServerResponse, name: string): Promise<void> {
    const info = await this.host.remove(name);
    sendJson(res, 200, info);
  }

  private async pauseVm(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    await this.emptyBody(req, `POST /v1/vms/${name}/pause`);
    const vm = await this.host.pause(name);
    sendJson(res, 200, await vm.info(this.host.name));
  }

  private async resumeVm(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    await this.emptyBody(req, `POST /v1/vms/${name}/resume`);
    const vm = this.host.resume(name);
    sendJson(res, 200, await vm.info(this.host.name));
  }

  private async setBalloon(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    const body = validate<SetBalloonRequest>(await readJsonBody(req, SMALL_BODY_LIMIT), SET_BALLOON, `POST /v1/vms/${name}/balloon`);
    const vm = this.host.setBalloon(name, body.targetBytes);
    sendJson(res, 200, await vm.info(this.host.name));
  }

  private async console(req: IncomingMessage, res: ServerResponse, name: string, query: URLSearchParams): Promise<void> {
    const follow = flag(query, 'follow');
    const waitMs = waitParam(query);
    let vm = this.host.find(name);
    if (vm === undefined && waitMs > 0) {
      // Not here yet: wait for it to arrive (an incoming migration), so a client can be on the
      // destination's console before the VM resumes there and miss none of its first output.
      vm = await this.host.whenHere(name, waitMs, (stop) => req.once('close', stop));
      if (res.destroyed) return;
    }
    if (vm === undefined) throw ApiFailure.notFound(`no VM named '${name}' on host ${this.host.name}${waitMs > 0 ? ` (waited ${waitMs} ms)` : ''}`);
    const history = vm.consoleHistory();
    const headers = { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'x-tern-vm': vm.name, 'x-tern-host': this.host.name };
    if (!follow) {
      res.writeHead(200, { ...headers, 'content-length': history.length });
      res.end(history);
      return;
    }
    // Why the stream ended comes in trailers, so a client can follow a VM that migrated.
    res.writeHead(200, { ...headers, trailer: 'x-tern-end, x-tern-migration, x-tern-destination, x-tern-to' });
    res.write(history);
    const finish = (trailers: Record<string, string>, end: () => void): void => {
      if (!res.writableEnded) res.addTrailers(trailers);
      end();
    };
    this.stream(req, res, (end) => {
      const onData = (d: Uint8Array): void => {
        res.write(d);
        if (res.writableLength > FOLLOW_BACKLOG_LIMIT) finish({ 'x-tern-end': 'slow-reader' }, end);
      };
      // Output flushed before the exit message is already here; nothing comes after it.
      const onExit = (): void => finish({ 'x-tern-end': 'exited' }, end);
      const onGone = (d: Departure): void => {
        const t: Record<string, string> = { 'x-tern-end': d.why };
        if (d.migration !== undefined) t['x-tern-migration'] = d.migration;
        if (d.destination !== undefined) t['x-tern-destination'] = d.destination;
        if (d.to !== undefined) t['x-tern-to'] = d.to;
        finish(t, end);
      };
      vm.on('console', onData);
      vm.on('exit', onExit);
      vm.on('gone', onGone);
      if (vm.departure !== undefined) onGone(vm.departure);
      else if (vm.status === 'exited') onExit();
      return () => {
        vm.off('console', onData);
        vm.off('exit', onExit);
        vm.off('gone', onGone);
      };
    });
  }

  /** Runs a streaming answer until the client leaves, `end` is called, or the daemon stops. */
  private stream(req: IncomingMessage, res: ServerResponse, attach: (end: () => void) => () => void): void {
    req.socket.setTimeout(0);
    req.socket.setNoDelay(true);
    this.streams.add(res);
    let detach: (() => void) | undefined;
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      detach?.();
      this.streams.delete(res);
      if (!res.writableEnded) res.end();
    };
    res.on('close', end);
    detach = attach(end);
    if (ended) detach();
  }

  private async listMigrations(res: ServerResponse): Promise<void> {
    sendJson(res, 200, { migrations: this.ctx.migrations.list() });
  }

  private async startMigration(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = validate<StartMigrationRequest>(await readJsonBody(req, SMALL_BODY_LIMIT), START_MIGRATION, 'POST /v1/migrations');
    const started = await this.ctx.migrations.start(body);
    sendJson(res, 202, started, { location: started.location });
  }

  private async getMigration(res: ServerResponse, id: string): Promise<void> {
    sendJson(res, 200, this.ctx.migrations.get(id));
  }

  private async cancelMigration(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    await this.emptyBody(req, `POST /v1/migrations/${id}/cancel`);
    sendJson(res, 202, this.ctx.migrations.cancel(id));
  }

  private async events(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): Promise<void> {
    const vmFilter = query.get('vm');
    const lastId = Number(req.headers['last-event-id'] ?? query.get('since') ?? NaN);
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(`retry: 2000\n: tern host ${this.host.name}\n\n`);
    const send = (n: NumberedEvent): void => {
      const e: HostEvent = n.event;
      if (vmFilter !== null && e.vm !== vmFilter) return;
      res.write(`id: ${n.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    if (Number.isSafeInteger(lastId)) for (const n of this.host.events.since(lastId)) send(n);
    this.stream(req, res, (end) => {
      const onEvent = (n: NumberedEvent): void => {
        send(n);
        if (res.writableLength > FOLLOW_BACKLOG_LIMIT) end();
      };
      this.host.events.on('event', onEvent);
      const beat = setInterval(() => res.write(': keep-alive\n\n'), SSE_HEARTBEAT_MS);
      return () => {
        clearInterval(beat);
        this.host.events.off('event', onEvent);
      };
    });
  }

  listen(port: number, host: string): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const a = this.server.address();
        if (a === null || typeof a === 'string') reject(new Error('the API server has no TCP address'));
        else resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Stops accepting, ends streams, closes idle connections; waits (bounded) for answers in flight. */
  async close(waitMs: number): Promise<void> {
    for (const res of [...this.streams]) res.end();
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
    this.server.closeAllConnections();
  }
}

/** The console's `wait` parameter: milliseconds, 0 when absent; at most an hour. */
function waitParam(q: URLSearchParams): number {
  const v = q.get('wait');
  if (v === null) return 0;
  const n = Number(v);
  if (!/^\d{1,7}$/.test(v) || n > 3_600_000) throw ApiFailure.badRequest(`wait: '${v}' is not a whole number of milliseconds from 0 to 3600000`);
  return n;
}

function flag(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  return v !== null && v !== '0' && v !== 'false' && v !== 'no';
}

