/** A small HTTP+JSON requester for the management API (the CLI, and hosts asking each other). */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { formatHostPort, type HostPort } from './address.js';

/** The host could not be reached at all (nothing listening, wrong address, no answer). */
export class UnreachableError extends Error {
  constructor(readonly address: string, readonly reason: string) {
    super(`cannot reach tern host at ${address}: ${reason}`);
    this.name = 'UnreachableError';
  }
}

/** Something answered, but not as a tern host does. */
export class NotTernError extends Error {
  constructor(readonly address: string, detail: string) {
    super(`the server at ${address} does not look like a tern host (${detail})`);
    this.name = 'NotTernError';
  }
}

export interface JsonResponse {
  readonly status: number;
  readonly body: unknown;
}

function reasonOf(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ECONNREFUSED': return 'connection refused (is `tern host serve` running there?)';
    case 'ENOTFOUND':
    case 'EAI_AGAIN': return 'unknown host name';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH': return 'no route to host';
    case 'ECONNRESET': return 'connection reset';
    case 'EPIPE': return 'connection closed while sending';
    case 'ETIMEDOUT': return 'connection timed out';
    default: return e.code !== undefined ? `${e.code}: ${e.message}` : e.message;
  }
}

export interface RequestOptions {
  /** A JSON value to send, or raw bytes as they are. */
  readonly body?: unknown;
  /** Overall deadline for connecting and receiving the answer headers (default 10 s). */
  readonly timeoutMs?: number;
  /** Largest answer accepted (default 64 MiB). */
  readonly maxBytes?: number;
}

/** Opens a request and resolves with the response head (the body still to read). */
export function openRequest(addr: HostPort, method: string, path: string, opts: RequestOptions = {}): Promise<IncomingMessage> {
  const where = formatHostPort(addr);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let payload: Buffer | undefined;
  if (opts.body instanceof Uint8Array) payload = Buffer.from(opts.body);
  else if (opts.body !== undefined) payload = Buffer.from(JSON.stringify(opts.body));
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: addr.host,
      port: addr.port,
      method,
      path,
      headers: {
        accept: 'application/json',
        ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
      },
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new UnreachableError(where, `no answer within ${(timeoutMs / 1000).toFixed(timeoutMs < 1000 ? 1 : 0)} s`));
    }, timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new UnreachableError(where, reasonOf(e)));
    });
    req.on('response', (res) => {
      clearTimeout(timer);
      resolve(res);
    });
    req.end(payload);
  });
}

/** Reads a whole response body. */
export function readBody(res: IncomingMessage, where: string, maxBytes = 64 * 1024 * 1024): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    res.on('data', (c: Buffer) => {
      n += c.length;
      if (n > maxBytes) {
        res.destroy();
        reject(new NotTernError(where, `answer larger than ${maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    });
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', (e: NodeJS.ErrnoException) => reject(new UnreachableError(where, reasonOf(e))));
    res.on('aborted', () => reject(new UnreachableError(where, 'connection closed mid-answer')));
  });
}

/** One request, answered with JSON (every answer of a tern host is, errors included). */
export async function requestJson(addr: HostPort, method: string, path: string, opts: RequestOptions = {}): Promise<JsonResponse> {
  const where = formatHostPort(addr);
  const res = await openRequest(addr, method, path, opts);
  const bytes = await readBody(res, where, opts.maxBytes);
  const type = res.headers['content-type'] ?? '';
  if (!type.startsWith('application/json')) {
    throw new NotTernError(where, `HTTP ${res.statusCode ?? '?'} with ${type === '' ? 'no content type' : type}`);
  }
  try {
    return { status: res.statusCode ?? 0, body: bytes.length === 0 ? null : JSON.parse(bytes.toString('utf8')) };
  } catch {
    throw new NotTernError(where, 'its answer is not valid JSON');
  }
}

/** The `error.message` of a tern error answer, or a description of the status. */
export function errorMessageOf(r: JsonResponse): { code: string; message: string } {
  const b = r.body as { error?: { code?: unknown; message?: unknown } } | null;
  if (b !== null && typeof b === 'object' && b.error !== undefined && typeof b.error.message === 'string') {
    return { code: typeof b.error.code === 'string' ? b.error.code : 'error', message: b.error.message };
  }
  return { code: 'error', message: `HTTP ${r.status}` };
}
