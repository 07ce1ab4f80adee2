// A hand-written migration destination for tests of the source against a peer that misbehaves:
// it answers every PING with a PONG and hands each frame to `onFrame` with the socket to answer on.
import { createServer, type Server, type Socket } from 'node:net';
import { FrameReader, FrameType, decodePing, encodePong, type Frame } from '../../src/migration/wire/index.js';

export interface FakeDestination {
  server: Server;
  port: number;
  frames: Frame[];
  sockets: Socket[];
  /** Called for each frame; the socket to answer on. */
  onFrame: (f: Frame, s: Socket) => void;
  close(): void;
}

export async function fakeDestination(): Promise<FakeDestination> {
  const fake: FakeDestination = {
    server: undefined as unknown as Server,
    port: 0,
    frames: [],
    sockets: [],
    onFrame: () => {},
    close: () => {
      for (const s of fake.sockets) s.destroy();
      fake.server.close();
    },
  };
  fake.server = createServer((s) => {
    fake.sockets.push(s);
    const reader = new FrameReader({ from: 'source' });
    s.on('error', () => {});
    s.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      for (let f = reader.next(); f !== undefined; f = reader.next()) {
        const copy = { type: f.type, flags: f.flags, payload: f.payload.slice() };
        fake.frames.push(copy);
        if (f.type === FrameType.Ping) s.write(encodePong({ nonce: decodePing(f.payload).nonce }));
        fake.onFrame(copy, s);
      }
    });
  });
  await new Promise<void>((r) => fake.server.listen(0, '127.0.0.1', r));
  fake.port = (fake.server.address() as { port: number }).port;
  return fake;
}

/** Waits for `cond`, polling every 10 ms; throws naming `what` after `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
