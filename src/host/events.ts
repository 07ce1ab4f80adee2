import { EventEmitter } from 'node:events';
import type { HostEvent } from './api-types.js';

/** A HostEvent before it is stamped with its time. */
export type HostEventInput = HostEvent extends infer E ? (E extends HostEvent ? Omit<E, 'time'> : never) : never;

/** A numbered event, as GET /v1/events sends it (the number is the SSE `id:`). */
export interface NumberedEvent {
  readonly seq: number;
  readonly event: HostEvent;
}

/** Recent events kept so a reconnecting SSE client (Last-Event-ID) misses nothing. */
const BACKLOG = 256;

/** The host's event stream: VM lifecycle and migration progress, fanned out to SSE clients. */
export class EventHub extends EventEmitter<{ event: [NumberedEvent] }> {
  private seq = 0;
  private readonly backlog: NumberedEvent[] = [];

  constructor() {
    super();
    // Every SSE client is a listener; there may be many.
    this.setMaxListeners(0);
  }

  publish(e: HostEventInput): void {
    const n: NumberedEvent = { seq: ++this.seq, event: { ...e, time: new Date().toISOString() } as HostEvent };
    this.backlog.push(n);
    if (this.backlog.length > BACKLOG) this.backlog.shift();
    this.emit('event', n);
  }

  /** Events after `seq` still in the backlog. */
  since(seq: number): NumberedEvent[] {
    return this.backlog.filter((n) => n.seq > seq);
  }
}
