/** The CLI's client of a tern host's management API, with errors that say what went wrong. */
import type { IncomingMessage } from 'node:http';
import type { CreateVmRequest, HostInfo, MigrationInfo, MigrationStarted, StartMigrationRequest, VmInfo } from '../host/api-types.js';
import { formatHostPort, parseHostPort, type HostPort } from '../host/address.js';
import { NotTernError, UnreachableError, errorMessageOf, openRequest, readBody, requestJson } from '../host/http-json.js';

/** A command failed for a reason that is not a usage error: message on stderr, exit code 1. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'CliError';
  }
}

/** The host answered with an error. */
export class ApiError extends CliError {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The host the CLI talks to unless told otherwise (--host, or TERN_HOST). */
export const DEFAULT_HOST = process.env.TERN_HOST !== undefined && process.env.TERN_HOST !== '' ? process.env.TERN_HOST : '127.0.0.1:7001';

export class TernClient {
  readonly addr: HostPort;
  readonly address: string;

  constructor(address: string, what = '--host', private readonly timeoutMs = 30_000) {
    this.addr = parseHostPort(address, what);
    this.address = formatHostPort(this.addr);
  }

  private async call<T>(method: string, path: string, body?: unknown, ok: readonly number[] = [200, 201, 202]): Promise<T> {
    let r;
    try {
      r = await requestJson(this.addr, method, path, { body, timeoutMs: this.timeoutMs });
    } catch (e) {
      if (e instanceof UnreachableError || e instanceof NotTernError) throw new CliError(e.message);
      throw e;
    }
    if (!ok.includes(r.status)) {
      const { code, message } = errorMessageOf(r);
      throw new ApiError(r.status, code, message);
    }
    return r.body as T;
  }

  hostInfo(): Promise<HostInfo> {
    return this.call('GET', '/v1/host');
  }

  async listVms(): Promise<VmInfo[]> {
    return (await this.call<{ vms: VmInfo[] }>('GET', '/v1/vms')).vms;
  }

  getVm(name: string): Promise<VmInfo> {
    return this.call('GET', `/v1/vms/${encodeURIComponent(name)}`);
  }

  createVm(req: CreateVmRequest): Promise<VmInfo> {
    return this.call('POST', '/v1/vms', req);
  }

  pauseVm(name: string): Promise<VmInfo> {
    return this.call('POST', `/v1/vms/${encodeURIComponent(name)}/pause`);
  }

  resumeVm(name: string): Promise<VmInfo> {
    return this.call('POST', `/v1/vms/${encodeURIComponent(name)}/resume`);
  }

  setBalloon(name: string, targetBytes: number): Promise<VmInfo> {
    return this.call('POST', `/v1/vms/${encodeURIComponent(name)}/balloon`, { targetBytes });
  }

  deleteVm(name: string): Promise<VmInfo> {
    return this.call('DELETE', `/v1/vms/${encodeURIComponent(name)}`);
  }

  startMigration(req: StartMigrationRequest): Promise<MigrationStarted> {
    return this.call('POST', '/v1/migrations', req);
  }

  async listMigrations(): Promise<MigrationInfo[]> {
    return (await this.call<{ migrations: MigrationInfo[] }>('GET', '/v1/migrations')).migrations;
  }

  getMigration(id: string): Promise<MigrationInfo> {
    return this.call('GET', `/v1/migrations/${encodeURIComponent(id)}`);
  }

  cancelMigration(id: string): Promise<MigrationInfo> {
    return this.call('POST', `/v1/migrations/${encodeURIComponent(id)}/cancel`);
  }

  /** A streaming GET (console follow, events): the response once its head is in, 200 only. */
  /** A GET whose body is read as it comes; `timeoutMs` bounds the wait for the answer's head. */
  async stream(path: string, timeoutMs: number = this.timeoutMs): Promise<IncomingMessage> {
    let res: IncomingMessage;
    try {
      res = await openRequest(this.addr, 'GET', path, { timeoutMs });
    } catch (e) {
      if (e instanceof UnreachableError) throw new CliError(e.message);
      throw e;
    }
    if (res.statusCode !== 200) {
      const bytes = await readBody(res, this.address).catch(() => Buffer.alloc(0));
      let parsed: unknown = null;
      try {
        parsed = JSON.parse(bytes.toString('utf8'));
      } catch {
        // not JSON: describe by status
      }
      const { code, message } = errorMessageOf({ status: res.statusCode ?? 0, body: parsed });
      throw new ApiError(res.statusCode ?? 0, code, message);
    }
    return res;
  }

  /** The whole console history. */
  async console(name: string): Promise<Buffer> {
    const res = await this.stream(`/v1/vms/${encodeURIComponent(name)}/console`);
    try {
      return await readBody(res, this.address);
    } catch (e) {
      throw new CliError((e as Error).message);
    }
  }
}
