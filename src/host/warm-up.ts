import { setTimeout as sleep } from 'node:timers/promises';
import type { VirtioDeviceSpec } from '../machine/devices/virtio/device-spec.js';
import { GuestRam } from '../machine/memory/ram.js';
import { Vcpu, type VcpuThread } from '../machine/vcpu/vcpu.js';
import { SampleReplay, type ReplayTally } from '../net/sample-replay.js';
import type { TrafficSample } from '../migration/wire/messages.js';
import type { Logger } from '../util/log.js';

/** What a warm-up boots: the incoming VM's image, boot args, RAM size and devices. */
export interface WarmUpGuest {
  readonly name: string;
  readonly image: Uint8Array;
  readonly imageName: string;
  readonly bootArgs: string;
  readonly ramBytes: number;
  readonly devices: readonly VirtioDeviceSpec[];
  /**
   * Client traffic to replay to the throwaway boot over its vsock device (the source's
   * WARM_TRAFFIC), once it is known; never settling means none.
   */
  readonly traffic?: Promise<readonly TrafficSample[]>;
  readonly log: Logger;
}

/** What one warm-up did, for the log. */
export interface WarmUpResult {
  /** The thread, now compiled for this guest; undefined if the guest could not run (it is then ended). */
  readonly thread: VcpuThread | undefined;
  /** How long the guest ran. */
  readonly ranMs: number;
  /** Whether `until` cut it short. */
  readonly cut: boolean;
  /** What the traffic replay did; undefined if there was none. */
  readonly traffic: ReplayTally | undefined;
}

/**
 * Runs a throwaway boot of `guest` on `thread` (a new thread if undefined) for up to `ms`, or until
 * `until` settles, and hands the thread back. A vCPU thread runs a guest at a few percent of full
 * speed for its first 100–200 ms while V8 compiles the CPU loop for that guest's instructions;
 * after a warm-up the real VM resumes on compiled code. The throwaway machine has its own RAM (a
 * fresh buffer the kernel backs only where the guest writes) and no console reader. Its network
 * is this host alone: the client traffic samples, if any, are replayed to it (SampleReplay), so
 * its request paths run before the resume too (docs/networking.md, "Warm-up traffic", for what it
 * measured). Nothing it does reaches the incoming VM or a client.
 */
export async function warmUpThread(thread: VcpuThread | undefined, guest: WarmUpGuest, ms: number, until: Promise<void>): Promise<WarmUpResult> {
  const t0 = performance.now();
  const ram = GuestRam.allocate(guest.ramBytes);
  const vcpu = await Vcpu.start({
    ram,
    name: `${guest.name} (warm-up)`,
    devices: guest.devices,
    running: true,
    start: { kind: 'boot', boot: { image: guest.image, imageName: guest.imageName, bootargs: guest.bootArgs } },
    ...(thread !== undefined ? { thread } : {}),
  });
  const timer = new AbortController();
  let cut = false;
  let ended = false;
  let replay: SampleReplay | undefined;
  const port = vcpu.vsock;
  if (port !== undefined) {
    guest.traffic?.then(
      (samples) => {
        if (!ended && samples.length > 0) replay = new SampleReplay(port, samples, guest.log, `${guest.name} (warm-up)`);
      },
      () => {},
    );
  }
  const stopped = new Promise<void>((resolve) => {
    vcpu.once('exit', () => resolve());
    vcpu.once('crash', () => resolve());
  });
  await Promise.race([
    sleep(ms, undefined, { signal: timer.signal }).catch(() => {}),
    until.then(() => (cut = true), () => (cut = true)),
    stopped,
  ]);
  timer.abort();
  ended = true;
  const traffic = await replay?.stop();
  const ranMs = performance.now() - t0;
  return { thread: await vcpu.retire(), ranMs, cut, traffic };
}
