/**
 * The JSON shapes of the management API (docs/api.md, docs/openapi.json). Shared by the daemon
 * and the CLI so both speak the same language.
 */
import type { MigrationProgress, MigrationReport, MigrationStatus } from '../migration/report.js';

export type VmStatus = 'running' | 'paused' | 'migrating' | 'exited' | 'crashed';

export interface VmInfo {
  name: string;
  /** RFC 4122 form; the same on every host the VM visits. */
  uuid: string;
  status: VmStatus;
  /** The name of the host holding the VM. */
  host: string;
  imageName: string;
  imageDigest: string;
  memBytes: number;
  bootArgs: string;
  /** 'boot': started on this host; 'migration': arrived here by live migration. */
  origin: 'boot' | 'migration';
  /** When the VM started or arrived on this host (ISO 8601). */
  since: string;
  /** Set once the guest powered off. */
  exitCode?: number;
  /** Set when the vCPU thread crashed (an emulator bug, not the guest's). */
  error?: string;
  /** The id of the outgoing migration in progress. */
  migration?: string;
  /** Instructions retired (absent when the vCPU could not answer in time). */
  instructions?: number;
  /** Guest virtual time (mtime) in milliseconds: stops while the VM is paused, travels with it. */
  guestTimeMs?: number;
  /** Bytes of console history held (GET /v1/vms/{name}/console). */
  consoleBytes: number;
  /** Set when the VM has a gateway (docs/networking.md). */
  network?: VmNetworkInfo;
  /** Its virtio-balloon device (QEMU's query-balloon); POST /v1/vms/{name}/balloon sets the target. */
  balloon?: VmBalloonInfo;
}

export interface VmBalloonInfo {
  /** The memory the guest is asked to keep: RAM minus the balloon's target size. */
  targetBytes: number;
  /** The memory the guest keeps as its driver last reported: RAM minus the balloon's size. */
  actualBytes: number;
  /** RAM the device holds zeroed in the balloon (never sent by a migration). */
  balloonedBytes: number;
  /** A guest balloon driver runs (it set DRIVER_OK); without one a target has no effect. */
  driver: boolean;
  /** The driver negotiated free page hinting (used at migration start). */
  freePageHint: boolean;
}

export interface SetBalloonRequest {
  /** Memory the guest should keep, bytes: a multiple of 4 KiB, more than 0, at most the VM's RAM. */
  targetBytes: number;
}

export interface VmNetworkInfo {
  /** The gateway's link address, host:port. */
  gateway: string | null;
  /** Exposed ports, "HOSTPORT:VMPORT" (HOSTPORT on the gateway, VMPORT the guest's vsock port). */
  expose: string[];
  /** Location epoch: 0 at boot, +1 at each migration. */
  epoch: number;
  /** The gateway has accepted this host's announcement of the VM. */
  attached: boolean;
  /** Client connections relayed to the guest. */
  connections: number;
  /** Why the gateway refused the VM, if it did. */
  error?: string;
}

export interface HostInfo {
  name: string;
  version: string;
  apiVersion: string;
  /** The management API address, host:port. */
  api: string;
  /** Where sources send migration data, host:port; null when this build has no migration engine. */
  migration: string | null;
  pid: number;
  startedAt: string;
  vms: number;
  memory: {
    /** The budget for guest RAM on this host (--max-mem). */
    maxBytes: number;
    /** RAM of the VMs held here. */
    usedBytes: number;
    /** RAM reserved for incoming migrations. */
    reservedBytes: number;
    freeBytes: number;
    /** RAM of departed VMs kept warm for reuse (--ram-pool) and buffers preallocated at start (--prealloc-ram) not yet taken; outside the budget. */
    pooledBytes: number;
    /** Incoming VMs' fresh RAM written ahead of their pages since the daemon started (WRITTEN, protocol 1.8). */
    prefaultedBytes: number;
  };
  /** vCPU threads of departed VMs kept for the next VM of the same image (--warm-threads). */
  warmThreads: number;
  /** New vCPU threads started ahead of need, for a VM with no thread of its image here (0 or 1; --no-spare-thread). */
  spareThreads: number;
  /** Guest-image warm-ups run here for incoming migrations since the daemon started (--warm-up). */
  warmUps: number;
  /**
   * What those warm-ups' replays of client traffic did (WARM_TRAFFIC, docs/networking.md): the
   * connections the throwaway boots accepted and the answers read from them.
   */
  warmUpTraffic: { connections: number; answers: number };
  /**
   * Guest RAM on transparent huge pages: 'on', or 'off: ' and why (src/util/huge-pages.ts). A
   * first write to fresh RAM then faults once per 2 MiB instead of once per 4 KiB.
   */
  hugePages: string;
  migrations: { outgoing: number; incoming: number };
}

export interface CreateVmRequest {
  name: string;
  /** The image file's bytes, base64. */
  image: string;
  imageName: string;
  memBytes?: number;
  bootArgs?: string;
  /** Ports the gateway exposes for the VM, "HOSTPORT:VMPORT"; needs `gateway`. */
  expose?: string[];
  /** The gateway's link address, host:port. */
  gateway?: string;
}

export interface StartMigrationRequest {
  vm: string;
  /** The destination host's management API address, host:port. */
  to: string;
  maxBandwidthBps?: number;
  /** The stop-and-copy round's rate; 0 = unlimited (QEMU's completion); absent: maxBandwidthBps. */
  stopCopyBandwidthBps?: number;
  /**
   * Guest time across the switchover pause: 'continuous' (default; the destination moves the guest
   * clock forward by the pause, as on Xen) or 'frozen' (stands still while paused, as QEMU's).
   */
  guestClock?: 'continuous' | 'frozen';
  minBandwidthBps?: number;
  /** Dynamic rate limit increment; 0 or absent: max(50 Mbit/s, max/2), none when max is unlimited. */
  rateIncrementBps?: number;
  downtimeLimitMs?: number;
  maxRounds?: number;
  verifyRam?: boolean;
  timeoutMs?: number;
  /** precopy (default), postcopy, hybrid (precopyRounds pre-copy rounds, then post-copy), auto. */
  mode?: 'precopy' | 'postcopy' | 'hybrid' | 'auto';
  /** Hybrid: pre-copy rounds before the switch (default 1). */
  precopyRounds?: number;
  /** Post-copy push order: 'bubbling' (default; pre-paging around faults) or 'linear'. */
  prepaging?: 'linear' | 'bubbling';
  /** Resume this VM's post-copy migration that is paused by a broken connection (other fields but `to` are ignored). */
  resume?: boolean;
  /** Throttle the vCPU while it dirties memory faster than pre-copy sends it (QEMU's auto-converge). */
  autoConverge?: boolean;
  /** XBZRLE delta encoding of re-sent pages. */
  xbzrle?: boolean;
  /** XBZRLE page cache size (default 64 MiB); needs xbzrle. */
  xbzrleCacheBytes?: number;
  /** Compress the page stream. */
  compression?: 'lz4' | 'zstd';
  /** Parallel TCP streams for page data (pre-copy; default 1). */
  streams?: number;
  /** Free page hinting at migration start when the guest's balloon driver offers it (default true). */
  freePageHint?: boolean;
  /** Pre-copy over one stream: consecutive raw pages as PAGE_RUN frames, read by the destination straight into guest RAM (default true). */
  pageRuns?: boolean;
  /** Pre-copy: turn XBZRLE on when the rounds stop shrinking, before giving up on converging (default true). */
  xbzrleFallback?: boolean;
  /** Stun guest tasks that dirty memory faster than stunBudgetBps in the final rounds (pre-copy; docs/assist.md). */
  stun?: boolean;
  /** Stunning budget, bytes/s (needs stun; default a quarter of the bandwidth stop-and-copy expects). */
  stunBudgetBps?: number;
}

export interface MigrationInfo {
  id: string;
  /** 'outgoing': this host is the source; 'incoming': this host is the destination. */
  direction: 'outgoing' | 'incoming';
  vm: string;
  status: MigrationStatus;
  /** Source host name (unknown for a failed incoming migration). */
  source?: string;
  destination: string;
  /** The destination's API address (outgoing only). */
  to?: string;
  startedAt: string;
  finishedAt?: string;
  /** Live progress (outgoing; the last one once finished). */
  progress?: MigrationProgress;
  /** The final report (outgoing, once finished). */
  report?: MigrationReport;
  /** Incoming: downtime measured at this host; failures: why. */
  downtimeMs?: number;
  /** Incoming post-copy: pages still at the source. */
  missingPages?: number;
  error?: string;
}

export interface MigrationStarted {
  id: string;
  vm: string;
  source: string;
  destination: string;
  to: string;
  /** Where to follow it: GET this path on the source host. */
  location: string;
}

/** One Server-Sent Event of GET /v1/events: the SSE `event:` field is `type`. */
export type HostEvent =
  | { type: 'vm.created' | 'vm.paused' | 'vm.resumed' | 'vm.deleted'; time: string; vm: string }
  | { type: 'vm.arrived'; time: string; vm: string; migration: string; downtimeMs: number }
  | { type: 'vm.departed'; time: string; vm: string; migration: string; destination: string }
  | { type: 'vm.exited'; time: string; vm: string; exitCode: number }
  | { type: 'vm.crashed'; time: string; vm: string; message: string }
  | { type: 'migration.started'; time: string; vm: string; migration: string; destination: string }
  | { type: 'migration.progress'; time: string; vm: string; migration: string; progress: MigrationProgress }
  | { type: 'migration.completed' | 'migration.failed' | 'migration.cancelled'; time: string; vm: string; migration: string; report: MigrationReport }
  | { type: 'migration.incoming-failed'; time: string; vm: string | null; message: string };

export type HostEventType = HostEvent['type'];
