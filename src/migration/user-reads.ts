/**
 * Sockets that read into buffers their owner chooses read by read (Node's `onread` option), so a
 * receiver can point the kernel's copy straight at guest RAM (PAGE_RUN data) instead of at a
 * buffer it would then copy from.
 *
 * Node offers `onread` only to sockets it connects, not to sockets a server accepts. An accepted
 * socket's handle is therefore moved, before it has read anything (the server must be created
 * with pauseOnConnect), into a new Socket built with `onread`: what Node does itself when it wraps
 * an accepted handle. Where that is not possible (a Node without `_handle`), the accepted socket
 * is returned as it is and its owner reads 'data' events.
 */
import { Socket } from 'node:net';

export interface UserReads {
  /** The buffer the next read fills (at most its length is read). Called before every read. */
  nextBuffer(): Uint8Array;
  /** `n` bytes were read into `buf`, the last buffer nextBuffer() returned. */
  onRead(n: number, buf: Uint8Array): void;
}

interface HandleCarrier {
  _handle: unknown;
}

/**
 * The accepted (and still paused) socket, re-wrapped to read through `reads`; `userReads` tells
 * whether that worked (else `socket` is the accepted one, reading 'data' events as usual).
 */
export function adoptForUserReads(accepted: Socket, reads: UserReads): { socket: Socket; userReads: boolean } {
  const carrier = accepted as unknown as HandleCarrier;
  const handle = carrier._handle;
  if (handle === null || typeof handle !== 'object' || typeof (handle as { readStart?: unknown }).readStart !== 'function') {
    accepted.resume();
    return { socket: accepted, userReads: false };
  }
  carrier._handle = null;
  accepted.destroy(); // without a handle: only the object goes (the server's count drops)
  const socket = new Socket({
    handle,
    onread: {
      buffer: () => reads.nextBuffer(),
      callback: (n: number, buf: Uint8Array): boolean => {
        reads.onRead(n, buf);
        return true;
      },
    },
  } as unknown as ConstructorParameters<typeof Socket>[0]);
  return { socket, userReads: true };
}
