/** HTTP plumbing for the management API: JSON answers, bounded JSON bodies, error bodies. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiFailure } from './errors.js';

/** Body limits: an image upload may be large, every other request is small. */
export const SMALL_BODY_LIMIT = 64 * 1024;
/** Largest accepted image (decoded) and the body that carries it as base64. */
export const MAX_IMAGE_BYTES = 32 * 1024 * 1024;
export const VM_BODY_LIMIT = Math.ceil(MAX_IMAGE_BYTES / 3) * 4 + 64 * 1024;
/** A client still sending an oversized body after its 413 is cut off after this long. */
const OVERSIZE_GRACE_MS = 5000;

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export function sendFailure(res: ServerResponse, f: ApiFailure, headers: Record<string, string> = {}): void {
  sendJson(res, f.status, f.toBody(), headers);
}

/**
 * Reads a JSON body of at most `limit` bytes. An empty body is `undefined`. Too large: 413 at once
 * (from Content-Length when given); the rest of the body is drained, then the connection is
 * cut if the client keeps sending.
 */
export function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): void => {
      req.removeAllListeners('data');
      req.resume();
      const t = setTimeout(() => req.socket.destroy(), OVERSIZE_GRACE_MS);
      t.unref();
      req.once('end', () => clearTimeout(t));
      reject(new ApiFailure(413, 'body-too-large', `request body larger than ${limit} bytes`));
    };
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      tooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > limit) {
        done = true;
        chunks.length = 0;
        tooLarge();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      if (size === 0) {
        resolve(undefined);
        return;
      }
      const text = Buffer.concat(chunks, size).toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new ApiFailure(400, 'invalid-json', `request body is not valid JSON: ${(e as Error).message}`));
      }
    });
    req.on('close', () => {
      if (done) return;
      done = true;
      reject(new ApiFailure(400, 'bad-request', 'the client closed the connection before sending the whole body'));
    });
    req.on('error', (e) => {
      if (done) return;
      done = true;
      reject(new ApiFailure(400, 'bad-request', `request body could not be read: ${e.message}`));
    });
  });
}
