import { hostname } from 'node:os';
import { Command } from 'commander';
import { parseHostPort } from '../host/address.js';
import type { HostEvent } from '../host/api-types.js';
import { Daemon, ListenError } from '../host/daemon.js';
import { GuestRam } from '../machine/memory/ram.js';
import { CliError, TernClient } from './client.js';
import { examples, keyValues, printJson } from './output.js';
import { formatBytes, parseDuration, parseSize } from './units.js';
import { withHostOptions } from './vm.js';

interface ServeOpts {
  listen: string;
  name: string;
  migrationListen?: string;
  maxMem: string;
  maxIncoming: string;
  ramPool: string;
  preallocRam?: string;
  warmThreads: string;
  warmUp: string;
  engineWarmUp: boolean;
  spareThread: boolean;
  json?: boolean;
}

/** How long a stopping daemon may take before it exits anyway. */
const STOP_DEADLINE_MS = 10_000;

export function registerHost(program: Command): void {
  const host = program
    .command('host')
    .description('run a tern host (the daemon holding VMs) and ask one about itself')
    .addHelpText('after', examples([
      'tern host serve --listen 127.0.0.1:7001 --name a &',
      'tern host info --host 127.0.0.1:7001',
      'tern host events --host 127.0.0.1:7001',
    ]));

  host
    .command('serve')
    .description('run the host daemon: VMs, the management API (HTTP+JSON, docs/api.md) and the migration listener')
    .option('-l, --listen <addr>', 'management API address, host:port (port 0: any free port)', '127.0.0.1:7001')
    .option('-n, --name <name>', 'host name, shown in reports and to peers', hostname())
    .option('--migration-listen <addr>', 'where to accept migration data, host:port (default: API host, API port + 1000)')
    .option('--max-mem <size>', 'budget for the RAM of all VMs on this host: 8G, 512M', '8G')
    .option('--max-incoming <n>', 'incoming migrations accepted at the same time', '4')
    .option('--ram-pool <size>', 'RAM of VMs that left, kept warm for the next VM of the same size (0: none); fresh RAM costs a kernel page fault per page (per 2 MiB on huge pages) on first write', '512M')
    .option('--prealloc-ram <sizes>', "guest RAM to back at start, for incoming VMs (and VMs started here) of these sizes: one buffer per size, comma-separated (256M or 256M,1G); its pages are written in the background, so a migration into it takes no page faults (like QEMU's -mem-prealloc). Counts against --ram-pool, and holds that memory while no VM uses it")
    .option('--warm-threads <n>', "vCPU threads of VMs that left, kept for the next VM of the same image (0: none); a new thread runs a guest slowly for its first 100-200 ms while its code compiles", '2')
    .option('--warm-up <duration>', "how long an incoming VM's guest image runs on its standby vCPU thread during pre-copy, so the VM resumes on compiled code (0: never; only when no thread here ran that image)", '300ms')
    .option('--no-engine-warm-up', 'skip compiling the migration paths at start (a second or so of loopback migrations of a synthetic VM, so the first real migration runs as fast as later ones)')
    .option('--no-spare-thread', 'do not keep a new vCPU thread started ahead of need (it saves a VM with no thread of its image here the 100-200 ms a new thread takes to load its code, an incoming VM\'s warm-up starts at once, and it has run the ISA self-test guest to its end, so the CPU loop is compiled for every instruction path)')
    .option('--json', 'print the start line as JSON: {"name","api","migration","pid"}')
    .addHelpText('after', `
Prints one line with its addresses once it serves, then logs JSON lines to stderr (level from
TERN_LOG: trace, debug, info, warn, error, silent). SIGTERM or SIGINT stops every VM and exits 0.
Guest RAM asks the kernel for transparent huge pages when the daemon is started by the tern
command, which sets GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (TERN_HUGE_PAGES=0: not); the start log
and GET /v1/host say whether it is on (hugePages).
${examples([
  'tern host serve --listen 127.0.0.1:7001 --name a &',
  'tern host serve --listen 0.0.0.0:7002 --name b --migration-listen 0.0.0.0:9000 --max-mem 16G',
  'tern host serve --listen 127.0.0.1:0 --json      # any free ports; the line says which',
  'tern host serve --listen 127.0.0.1:7002 --name b --prealloc-ram 256M   # its first 256 MiB VM lands in backed RAM',
])}`)
    .action(async (opts: ServeOpts) => {
      const listen = parseHostPort(opts.listen, '--listen', { allowZero: true });
      const migrationListen = opts.migrationListen !== undefined ? parseHostPort(opts.migrationListen, '--migration-listen', { allowZero: true, defaultHost: listen.host }) : undefined;
      const maxMemBytes = parseSize(opts.maxMem, '--max-mem', true);
      const ramPoolBytes = parseSize(opts.ramPool, '--ram-pool', false);
      const preallocRam = opts.preallocRam === undefined ? [] : opts.preallocRam.split(',').map((t) => parseSize(t, '--prealloc-ram', true));
      for (const size of preallocRam) {
        if (!GuestRam.isValidSize(size)) throw new CliError(`--prealloc-ram: ${formatBytes(size)} is not a VM RAM size (a multiple of 4 KiB from 1 MiB to 2 GiB)`, 2);
      }
      const preallocTotal = preallocRam.reduce((a, b) => a + b, 0);
      if (preallocTotal > ramPoolBytes) throw new CliError(`--prealloc-ram: ${formatBytes(preallocTotal)} does not fit --ram-pool ${formatBytes(ramPoolBytes)} (raise --ram-pool)`, 2);
      const warmThreads = Number(opts.warmThreads);
      if (!Number.isSafeInteger(warmThreads) || warmThreads < 0 || warmThreads > 64) throw new CliError(`--warm-threads: '${opts.warmThreads}' is not a whole number from 0 to 64`, 2);
      const warmUpMs = parseDuration(opts.warmUp, '--warm-up');
      const maxIncoming = Number(opts.maxIncoming);
      if (!Number.isSafeInteger(maxIncoming) || maxIncoming < 1) throw new CliError(`--max-incoming: '${opts.maxIncoming}' is not a positive whole number`, 2);
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(opts.name)) throw new CliError(`--name: '${opts.name}' is not a valid host name (letters, digits, '.', '_', '-')`, 2);
      const daemon = new Daemon({ name: opts.name, listen, maxMemBytes, ramPoolBytes, preallocRam, warmThreads, warmUpMs, engineWarmUp: opts.engineWarmUp, spareThread: opts.spareThread, maxIncoming, ...(migrationListen !== undefined ? { migrationListen } : {}) });
      let addrs;
      try {
        addrs = await daemon.start();
      } catch (e) {
        if (e instanceof ListenError) throw new CliError(e.message);
        throw e;
      }
      (globalThis as { ternServing?: boolean }).ternServing = true;
      if (opts.json === true) {
        process.stdout.write(JSON.stringify(addrs) + '\n');
      } else {
        const mig = addrs.migration !== null ? `migration ${addrs.migration}` : 'no migration listener (engine unavailable)';
        process.stdout.write(`tern host ${addrs.name}: API http://${addrs.api}, ${mig}, max guest memory ${formatBytes(maxMemBytes)} (pid ${addrs.pid})\n`);
      }
      let signals = 0;
      const onSignal = (sig: NodeJS.Signals): void => {
        if (++signals > 1) {
          daemon.log.warn({ signal: sig }, 'second signal: exiting now');
          process.exit(1);
        }
        daemon.log.info({ signal: sig }, 'stopping');
        const deadline = setTimeout(() => {
          daemon.log.error('stopping took too long; exiting anyway');
          process.exit(1);
        }, STOP_DEADLINE_MS);
        deadline.unref();
        daemon.stop().then(
          () => process.exit(0),
          (e: unknown) => {
            daemon.log.error({ err: String(e) }, 'stopping failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      // A bug must not take every VM of the host down with it: log it loudly and keep serving.
      process.on('uncaughtException', (e) => daemon.log.error({ err: e.stack ?? e.message }, 'uncaught exception (a bug in tern); still serving'));
      process.on('unhandledRejection', (e) => daemon.log.error({ err: e instanceof Error ? (e.stack ?? e.message) : String(e) }, 'unhandled rejection (a bug in tern); still serving'));
    });

  withHostOptions(host.command('info'))
    .description('show a host: name, version, addresses, VMs, memory budget, migrations in progress')
    .addHelpText('after', examples(['tern host info', 'tern host info --host 127.0.0.1:7002 --json']))
    .action(async (opts: { host: string; json?: boolean }) => {
      const info = await new TernClient(opts.host).hostInfo();
      if (opts.json === true) {
        printJson(info);
        return;
      }
      process.stdout.write(keyValues([
        ['name', info.name],
        ['version', `tern ${info.version}, API ${info.apiVersion}`],
        ['API', info.api],
        ['migration', info.migration ?? 'not accepted (no migration engine)'],
        ['pid', String(info.pid)],
        ['started', info.startedAt],
        ['VMs', String(info.vms)],
        ['memory', `${formatBytes(info.memory.usedBytes)} used, ${formatBytes(info.memory.reservedBytes)} reserved for incoming, ${formatBytes(info.memory.freeBytes)} free of ${formatBytes(info.memory.maxBytes)}, ${formatBytes(info.memory.pooledBytes)} kept warm for reuse`],
        ['vCPU threads', `${info.warmThreads} kept for the next VM of their image, ${info.spareThreads} spare; ${info.warmUps} guest-image warm-ups run for incoming migrations (${info.warmUpTraffic.answers} answers to replayed client traffic on ${info.warmUpTraffic.connections} connections)`],
        ['migrations', `${info.migrations.outgoing} outgoing, ${info.migrations.incoming} incoming in progress`],
      ]));
    });

  withHostOptions(host.command('events'))
    .description("follow a host's events (GET /v1/events): VM lifecycle, migration progress and results, until Ctrl-C")
    .option('--vm <name>', 'only events about this VM')
    .addHelpText('after', examples(['tern host events', 'tern host events --vm v1 --json    # one JSON event per line']))
    .action(async (opts: { host: string; json?: boolean; vm?: string }) => {
      const client = new TernClient(opts.host, '--host', 10_000);
      const res = await client.stream(`/v1/events${opts.vm !== undefined ? `?vm=${encodeURIComponent(opts.vm)}` : ''}`);
      process.stdout.on('error', (e: NodeJS.ErrnoException) => process.exit(e.code === 'EPIPE' ? 0 : 74));
      process.stderr.write(`tern: following the events of ${client.address}${opts.vm !== undefined ? ` about ${opts.vm}` : ''} (Ctrl-C to stop)\n`);
      let buf = '';
      await new Promise<void>((resolve, reject) => {
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
            if (data === '') continue;
            if (opts.json === true) process.stdout.write(data + '\n');
            else process.stdout.write(describeEvent(JSON.parse(data) as HostEvent) + '\n');
          }
        });
        res.on('end', resolve);
        res.on('error', reject);
      });
      throw new CliError(`host ${client.address} closed the event stream`);
    });
}

function describeEvent(e: HostEvent): string {
  const t = e.time.slice(11, 23);
  switch (e.type) {
    case 'vm.exited': return `${t}  ${e.type}  ${e.vm} (exit code ${e.exitCode})`;
    case 'vm.crashed': return `${t}  ${e.type}  ${e.vm}: ${e.message}`;
    case 'vm.arrived': return `${t}  ${e.type}  ${e.vm} (migration ${e.migration}, downtime ${e.downtimeMs} ms)`;
    case 'vm.departed': return `${t}  ${e.type}  ${e.vm} -> ${e.destination} (migration ${e.migration})`;
    case 'migration.started': return `${t}  ${e.type}  ${e.migration} ${e.vm} -> ${e.destination}`;
    case 'migration.progress': return `${t}  ${e.type}  ${e.migration} ${e.vm} ${e.progress.stage} round ${e.progress.round}, ${formatBytes(e.progress.bytesTransferred)} sent, ${formatBytes(e.progress.remainingBytes)} remaining`;
    case 'migration.completed':
    case 'migration.failed':
    case 'migration.cancelled':
      return `${t}  ${e.type}  ${e.migration} ${e.vm}: ${e.report.status}, ${e.report.totalTimeMs} ms total, downtime ${e.report.downtimeMs} ms${e.report.error !== undefined ? `: ${e.report.error.message}` : ''}`;
    case 'migration.incoming-failed': return `${t}  ${e.type}  ${e.vm ?? '?'}: ${e.message}`;
    default: return `${t}  ${e.type}  ${e.vm}`;
  }
}

