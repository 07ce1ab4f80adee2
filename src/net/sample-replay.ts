/**
 * Replays traffic samples (VsockEndpoint.trafficSamples) to a guest over its vsock device: for
 * each sampled port, a connection from the host that sends the sample's bytes, reads whatever
 * the guest answers, and sends them again, until stopped. A destination's guest-image warm-up
 * runs it against its throwaway boot (host/warm-up.ts), so the guest's request paths, the vsock
 * device's and the endpoint's have run before the real VM resumes there (docs/networking.md,
 * "Warm-up traffic"). Nothing it does reaches a client.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../util/log.js';
import { GuestStream } from './guest-stream.js';
import type { TrafficSample } from '../migration/wire/messages.js';
import { VsockEndpoint } from './vsock-endpoint.js';
import type { VsockHostPort } from './vsock-port.js';

/** How long one exchange waits for the guest's answer before it sends again. */
const ANSWER_WAIT_MS = 50;
/** Exchanges on one connection before it is reset and another opened (the accept path runs again). */
const EXCHANGES_PER_CONNECTION = 100;
/** A port nothing listens on yet (the guest still boots): ask again after this long. */
const REOPEN_MS = 10;

/** What a replay did. */
export interface ReplayTally {
  /** Connections the guest accepted. */
  connections: number;
  /** Answers read from the guest. */
  answers: number;
}

export class SampleReplay {
  readonly tally: ReplayTally = { connections: 0, answers: 0 };
  private readonly endpoint: VsockEndpoint;
  private readonly streams = new Set<GuestStream>();
  private readonly stopping = new AbortController();
  private readonly loops: Promise<void>[];

  constructor(port: VsockHostPort, samples: readonly TrafficSample[], log: Logger, vmName: string) {
    this.endpoint = new VsockEndpoint(port, log, vmName);
    this.endpoint.start();
    this.loops = samples.map((s) => this.replay(s));
  }

  /** Ends every connection and the endpoint; resolves once the loops are out. */
  async stop(): Promise<ReplayTally> {
    this.stopping.abort();
    for (const s of this.streams) s.destroy();
    await Promise.all(this.loops);
    this.endpoint.dispose();
    return this.tally;
  }

  private get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  /** A pause that ends early (false) when the replay stops. */
  private async pause(ms: number): Promise<boolean> {
    try {
      await sleep(ms, undefined, { signal: this.stopping.signal });
      return true;
    } catch {
      return false;
    }
  }

  private async replay(sample: TrafficSample): Promise<void> {
    while (!this.stopped) {
      const stream = new GuestStream(this.endpoint, sample.vmPort);
      this.streams.add(stream);
      try {
        await stream.opened;
      } catch {
        this.streams.delete(stream);
        if (!(await this.pause(REOPEN_MS))) return;
        continue;
      }
      this.tally.connections++;
      for (let i = 0; i < EXCHANGES_PER_CONNECTION && !this.stopped && !stream.isDone; i++) {
        if (sample.bytes.length > 0) stream.send(sample.bytes);
        const answer = await this.answer(stream);
        if (answer === 'ended') break;
        if (answer === 'read') this.tally.answers++;
      }
      stream.destroy();
      this.streams.delete(stream);
    }
  }

  /** The guest's next bytes ('read'), silence for ANSWER_WAIT_MS ('quiet'), or the end of the stream. */
  private async answer(stream: GuestStream): Promise<'read' | 'quiet' | 'ended'> {
    const waiting = new AbortController();
    try {
      const got = await Promise.race([stream.read(), sleep(ANSWER_WAIT_MS, 'quiet' as const, { signal: waiting.signal })]);
      if (got === 'quiet') return 'quiet';
      return got === undefined ? 'ended' : 'read';
    } catch {
      return 'ended';
    } finally {
      waiting.abort();
    }
  }
}
