/**
 * One end of a gateway link over TCP: frames in and out, a heartbeat, and one close reason.
 * Garbage from the peer closes the link with an ERROR frame saying why.
 */
import type { Socket } from 'node:net';
import { LinkError, LinkReader, LinkType, encodeError, encodePing, encodePong, linkTypeName, type LinkMessage } from './link-protocol.js';

/** A PING is sent this often when the link is otherwise quiet... */
export const HEARTBEAT_MS = 1000;
/** ...and a peer silent for this long is gone. */
export const DEAD_AFTER_MS = 5000;

export class LinkSocket {
  private readonly reader = new LinkReader();
  private closedWith: string | undefined;
  private lastHeard = performance.now();
  private readonly heartbeat: NodeJS.Timeout;
  private nonce = 0;
  /** Bytes and frames in and out, for status. */
  readonly counters = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 };

  constructor(
    readonly socket: Socket,
    private readonly onMessage: (m: LinkMessage) => void,
    private readonly onClose: (reason: string) => void,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => this.close(`socket error: ${e.code ?? e.message}`, false));
    socket.on('close', () => this.close('the peer closed the link', false));
    this.heartbeat = setInterval(() => this.tick(), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  get closeReason(): string | undefined {
    return this.closedWith;
  }

  /** Bytes written but not yet handed to the kernel. */
  get backlog(): number {
    return this.socket.writableLength;
  }

  send(frame: Uint8Array): void {
    if (this.closedWith !== undefined) return;
    this.counters.framesOut++;
    this.counters.bytesOut += frame.length;
    this.socket.write(frame);
  }

  /** Closes the link; `tellPeer` sends an ERROR frame with the reason first. */
  close(reason: string, tellPeer: boolean): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = reason;
    clearInterval(this.heartbeat);
    if (tellPeer && !this.socket.destroyed) {
      this.socket.end(encodeError(reason));
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.socket.destroy();
    }
    this.onClose(reason);
  }

  private receive(chunk: Buffer): void {
    if (this.closedWith !== undefined) return;
    this.lastHeard = performance.now();
    this.counters.bytesIn += chunk.length;
    try {
      this.reader.push(chunk, (m) => this.dispatch(m));
    } catch (e) {
      // Whatever went wrong, this link is done; the process goes on.
      this.close(e instanceof LinkError ? `bad frame from the peer: ${e.message}` : `internal error handling a frame: ${e instanceof Error ? e.message : String(e)}`, true);
    }
  }

  private dispatch(m: LinkMessage): void {
    if (this.closedWith !== undefined) return;
    this.counters.framesIn++;
    switch (m.type) {
      case LinkType.Ping:
        this.send(encodePong(m.nonce));
        return;
      case LinkType.Pong:
        return;
      case LinkType.Error:
        this.close(`the peer closed the link: ${m.text}`, false);
        return;
      default:
        this.onMessage(m);
    }
  }

  private tick(): void {
    const quiet = performance.now() - this.lastHeard;
    if (quiet > DEAD_AFTER_MS) {
      this.close(`no word from the peer for ${Math.round(quiet)} ms`, false);
      return;
    }
    this.send(encodePing(++this.nonce >>> 0));
  }
}

/** For log lines: a message's type name. */
export function describeMessage(m: LinkMessage): string {
  return linkTypeName(m.type);
}
