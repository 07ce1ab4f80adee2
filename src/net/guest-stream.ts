/**
 * A byte stream this host opens to one of its VM's vsock ports for itself (not for a gateway
 * client): the migration-assist channel (docs/assist.md). It rides the VM's VsockEndpoint as a
 * local connection, so it shares the device with the gateway's connections without disturbing
 * them, and it never travels with the VM (a freeze resets it).
 */
import { ResetReason } from './link-protocol.js';
import type { StreamUpstream, VsockEndpoint } from './vsock-endpoint.js';

const RESET_TEXT: Record<number, string> = {
  [ResetReason.Refused]: 'the guest refused the connection (nothing listens on that port)',
  [ResetReason.VmGone]: 'the VM paused or left this host',
};

export class GuestStream {
  /** Resolves once the guest accepted; rejects if it refused or the connection broke first. */
  readonly opened: Promise<void>;
  private connId: number | undefined;
  private seq = 0;
  private acked = 0;
  private readonly chunks: Uint8Array[] = [];
  private ended = false;
  private error: Error | undefined;
  private isClosed = false;
  private waiter: (() => void) | undefined;
  private closeWaiters: (() => void)[] = [];
  private settleOpen: { resolve: () => void; reject: (e: Error) => void } | undefined;

  constructor(private readonly endpoint: VsockEndpoint, readonly guestPort: number) {
    this.opened = new Promise<void>((resolve, reject) => {
      this.settleOpen = { resolve, reject };
    });
    this.opened.catch(() => {});
    const id = endpoint.openLocal(guestPort, this.upstream);
    if (id === undefined) this.fail(new Error('the VM is paused or gone'));
    else this.connId = id;
  }

  /** Queues bytes for the guest. */
  send(bytes: Uint8Array): void {
    if (this.connId === undefined || this.isClosed) return;
    this.endpoint.data(this.connId, this.seq, bytes);
    this.seq += bytes.length;
  }

  /** The next bytes from the guest; undefined at the end of its stream; throws if it broke. */
  async read(): Promise<Uint8Array | undefined> {
    for (;;) {
      const c = this.chunks.shift();
      if (c !== undefined) return c;
      if (this.error !== undefined) throw this.error;
      if (this.ended || this.isClosed) return undefined;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  /** Sends no more (SHUTDOWN); resolves once the connection is gone on both sides. */
  close(): Promise<void> {
    if (this.connId !== undefined && !this.isClosed) this.endpoint.fin(this.connId, this.seq);
    if (this.isClosed) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  /** RST now. */
  destroy(): void {
    if (this.connId !== undefined && !this.isClosed) this.endpoint.reset(this.connId);
    this.fail(new Error('connection reset by this host'));
  }

  get isDone(): boolean {
    return this.isClosed;
  }

  // ---- the endpoint's events for this connection ----

  private readonly upstream: StreamUpstream = {
    opened: () => {
      this.settleOpen?.resolve();
      this.settleOpen = undefined;
    },
    data: (connId, seq, bytes) => {
      if (seq + bytes.length <= this.acked) return;
      this.chunks.push(bytes.slice(Math.max(0, this.acked - seq)));
      this.acked = seq + bytes.length;
      this.ackLater(connId, this.acked);
      this.wake();
    },
    fin: (connId, seq) => {
      this.ended = true;
      this.ackLater(connId, seq + 1);
      this.wake();
    },
    ack: () => {},
    reset: (_connId, reason) => this.fail(new Error(RESET_TEXT[reason] ?? `the guest reset the connection (reason ${reason})`)),
    closed: () => this.finish(),
  };

  /** Acknowledges after the endpoint's pump returns (it is iterating its queue right now). */
  private ackLater(connId: number, upTo: number): void {
    queueMicrotask(() => {
      if (!this.isClosed) this.endpoint.ack(connId, upTo);
    });
  }

  private fail(e: Error): void {
    this.error ??= e;
    this.settleOpen?.reject(e);
    this.settleOpen = undefined;
    this.finish();
  }

  private finish(): void {
    this.isClosed = true;
    this.wake();
    for (const w of this.closeWaiters.splice(0)) w();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}
