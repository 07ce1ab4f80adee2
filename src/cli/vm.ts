import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Command } from 'commander';
import type { VmInfo } from '../host/api-types.js';
import { CONSOLE_HISTORY_BYTES } from '../machine/console-log.js';
import { DEFAULT_RAM_BYTES } from '../machine/memory/layout.js';
import { ApiError, CliError, DEFAULT_HOST, TernClient } from './client.js';
import { age, examples, keyValues, printJson, table } from './output.js';
import { UsageError, formatBytes, formatDuration, parseDuration, parseSize } from './units.js';
import { NetConfigError, checkExposures, parseExposure } from '../net/vm-network.js';
import { normalizeGateway } from '../host/vm-net-setup.js';

interface HostOpts {
  host: string;
  json?: boolean;
}

/** The --host and --json every vm command takes. */
export function withHostOptions(cmd: Command): Command {
  return cmd
    .option('-H, --host <addr>', 'the tern host to talk to: host:port of its API (env TERN_HOST)', DEFAULT_HOST)
    .option('--json', 'print the result as JSON (for scripts)');
}

/** How long `vm start` watches a new VM for an immediate power-off (a bad boot argument, say). */
const START_CHECK_MS = 300;

export function registerVm(program: Command): void {
  const vm = program
    .command('vm')
    .description('manage the VMs of a tern host (start, list, inspect, pause, resume, balloon, stop, console)')
    .addHelpText('after', examples([
      'tern vm start guests/images/verify.elf --name v1 --mem 256M --append "region=64M"',
      'tern vm list',
      'tern vm console v1 --follow',
      'tern vm balloon v1 128M',
      'tern vm stop v1',
    ]) + `\nEvery vm command talks to the host at --host (default ${DEFAULT_HOST}; set TERN_HOST to change it).\n`);

  withHostOptions(vm.command('start'))
    .description('boot a guest image as a new VM on the host (virsh create)')
    .argument('<image>', 'RV32 ELF image on this machine; the CLI uploads it to the host')
    .option('-n, --name <name>', 'VM name, unique on the host (default: the image name without its extension)')
    .option('-m, --mem <size>', 'guest RAM: 256M, 1G, or a bare number of MiB as QEMU -m', `${DEFAULT_RAM_BYTES / 1024 / 1024}M`)
    .option('-a, --append <args>', 'kernel command line for /chosen/bootargs (QEMU -append)', '')
    .option('--expose <HOSTPORT:VMPORT>', 'the gateway listens on TCP HOSTPORT and relays to the guest\'s vsock VMPORT (repeatable; needs --gateway)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--gateway <addr>', 'the gateway (tern gateway serve) the host links to for this VM, host:port')
    .addHelpText('after', examples([
      'tern vm start guests/images/kv.elf --host 127.0.0.1:7001 --name kv1 --expose 6379:6379 --gateway 127.0.0.1:7000',
      'tern vm start guests/images/verify.elf --host 127.0.0.1:7001 --name v1 --mem 256M --append "region=64M"',
      'tern vm start guests/images/hello.elf --json',
    ]))
    .action(async (image: string, opts: HostOpts & { name?: string; mem: string; append: string; expose: string[]; gateway?: string }) => {
      const memBytes = parseSize(opts.mem, '--mem', true);
      const network = cliNetwork(opts.expose, opts.gateway);
      let bytes: Buffer;
      try {
        bytes = await readFile(image);
      } catch (e) {
        throw new UsageError(`cannot read image ${image}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      const imageName = basename(image);
      const name = opts.name ?? imageName.replace(/\.[^.]*$/, '');
      const client = new TernClient(opts.host);
      let info: VmInfo;
      try {
        info = await client.createVm({ name, image: bytes.toString('base64'), imageName, memBytes, bootArgs: opts.append, ...network });
      } catch (e) {
        if (e instanceof ApiError && e.code === 'exists' && opts.name === undefined) {
          throw new ApiError(e.status, e.code, `${e.message}; choose another with --name`);
        }
        throw e;
      }
      // A guest that powers off at once (bad boot argument, image that does not fit) says why on its console.
      await new Promise((r) => setTimeout(r, START_CHECK_MS));
      info = await client.getVm(info.name).catch(() => info);
      if (opts.json === true) printJson(info);
      if (info.status === 'exited' && info.exitCode !== 0) {
        const out = (await client.console(info.name).catch(() => Buffer.alloc(0))).toString('utf8');
        throw new CliError(`VM ${info.name} powered off right after boot with exit code ${info.exitCode ?? '?'}${out !== '' ? `; its console:\n${out.trimEnd()}` : ''}\n(it stays on the host until 'tern vm stop ${info.name}')`);
      }
      if (opts.json !== true) {
        const state = info.status === 'exited' ? `; it has already powered off (exit code ${info.exitCode ?? '?'})` : '';
        const net = info.network !== undefined ? `; gateway ${info.network.gateway ?? '-'}${info.network.expose.length > 0 ? `, exposes ${info.network.expose.join(', ')}` : ''}` : '';
        process.stdout.write(`Started VM ${info.name} on host ${info.host} (${client.address}): ${formatBytes(info.memBytes)} RAM, ${info.imageName}, uuid ${info.uuid}${net}${state}\n`);
      }
    });

  withHostOptions(vm.command('list').alias('ls'))
    .description('list the VMs on the host (virsh list)')
    .addHelpText('after', examples(['tern vm list', 'tern vm list --host 127.0.0.1:7002 --json']))
    .action(async (opts: HostOpts) => {
      const client = new TernClient(opts.host);
      const vms = await client.listVms();
      if (opts.json === true) {
        printJson(vms);
        return;
      }
      if (vms.length === 0) {
        const h = await client.hostInfo().catch(() => undefined);
        process.stdout.write(`no VMs on host ${h?.name ?? client.address}\n`);
        return;
      }
      process.stdout.write(table(
        ['NAME', 'STATUS', 'MEMORY', 'IMAGE', 'UP', 'ORIGIN'],
        vms.map((v) => [v.name, v.status + (v.status === 'exited' ? ` (${v.exitCode ?? '?'})` : ''), formatBytes(v.memBytes), v.imageName, age(v.since), v.origin === 'migration' ? 'migrated in' : 'booted']),
      ));
    });

  withHostOptions(vm.command('inspect').alias('info'))
    .description('show everything about one VM (virsh dominfo)')
    .argument('<name>', 'VM name')
    .addHelpText('after', examples(['tern vm inspect v1', 'tern vm inspect v1 --json | jq .status']))
    .action(async (name: string, opts: HostOpts) => {
      const info = await new TernClient(opts.host).getVm(name);
      if (opts.json === true) {
        printJson(info);
        return;
      }
      const pairs: [string, string][] = [
        ['name', info.name],
        ['uuid', info.uuid],
        ['status', info.status],
        ['host', info.host],
        ['image', `${info.imageName} (${info.imageDigest})`],
        ['memory', `${formatBytes(info.memBytes)} (${info.memBytes} bytes)`],
        ['boot args', info.bootArgs === '' ? '(none)' : info.bootArgs],
        ['origin', info.origin === 'migration' ? 'arrived by live migration' : 'booted here'],
        ['since', `${info.since} (${age(info.since)} ago)`],
      ];
      if (info.instructions !== undefined) pairs.push(['instructions', info.instructions.toLocaleString('en-US')]);
      if (info.guestTimeMs !== undefined) pairs.push(['guest time', formatDuration(info.guestTimeMs)]);
      pairs.push(['console', `${info.consoleBytes} bytes`]);
      if (info.network !== undefined) {
        const n = info.network;
        pairs.push(['network', `gateway ${n.gateway ?? '-'} (${n.attached ? 'announced' : 'not announced'}${n.error !== undefined ? `: ${n.error}` : ''}), epoch ${n.epoch}, ${n.connections} connection${n.connections === 1 ? '' : 's'}${n.expose.length > 0 ? `, exposes ${n.expose.join(', ')}` : ''}`]);
      }
      if (info.balloon !== undefined) pairs.push(['balloon', describeBalloon(info)]);
      if (info.exitCode !== undefined) pairs.push(['exit code', String(info.exitCode)]);
      if (info.migration !== undefined) pairs.push(['migration', `${info.migration} (tern migrate status ${info.migration})`]);
      if (info.error !== undefined) pairs.push(['error', info.error]);
      process.stdout.write(keyValues(pairs));
    });

  const simple = (cmd: string, alias: string | undefined, description: string, done: string, run: (c: TernClient, name: string) => Promise<VmInfo>, example: string): void => {
    const c = withHostOptions(vm.command(cmd));
    if (alias !== undefined) c.alias(alias);
    c.description(description)
      .argument('<name>', 'VM name')
      .addHelpText('after', examples([example, `${example} --json`]))
      .action(async (name: string, opts: HostOpts) => {
        const info = await run(new TernClient(opts.host), name);
        if (opts.json === true) printJson(info);
        else process.stdout.write(`VM ${info.name} ${done} on host ${info.host}\n`);
      });
  };
  simple('pause', 'suspend', 'pause a running VM: its vCPU stops and guest time stands still (virsh suspend)', 'paused', (c, n) => c.pauseVm(n), 'tern vm pause v1');
  simple('resume', undefined, 'resume a paused VM (virsh resume)', 'resumed', (c, n) => c.resumeVm(n), 'tern vm resume v1');
  simple('stop', 'destroy', 'stop a VM at once and free its memory on the host (virsh destroy)', 'stopped and freed', (c, n) => c.deleteVm(n), 'tern vm stop v1');

  withHostOptions(vm.command('balloon').alias('setmem'))
    .description("set how much memory the guest keeps: the balloon driver in the guest gives the rest back to the host (QEMU balloon, virsh setmem)")
    .argument('<name>', 'VM name')
    .argument('<size>', 'memory the guest should keep: 48M, 1G, or bytes; a multiple of 4K, at most its RAM (its RAM: deflate the balloon entirely)')
    .option('-w, --wait [duration]', 'wait until the guest has followed (its actual size reaches the target), at most this long (default 10s)')
    .addHelpText('after', `
The guest must run a balloon driver (munch balloon=on does); without one the host answers 409.
Ballooned pages are zeroed by the device and never sent by a migration. 'tern vm inspect' shows
the target and what the guest actually keeps.
${examples([
  'tern vm balloon m1 16M                 # inflate: the guest keeps 16 MiB of its RAM',
  'tern vm balloon m1 16M --wait          # ... and wait until it has given the rest back',
  'tern vm balloon m1 64M --host 127.0.0.1:7002 --json   # deflate a 64 MiB VM entirely',
])}`)
    .action(async (name: string, size: string, opts: HostOpts & { wait?: boolean | string }) => {
      const targetBytes = parseSize(size, '<size>');
      const waitMs = opts.wait === undefined || opts.wait === false ? 0 : opts.wait === true ? DEFAULT_BALLOON_WAIT_MS : parseDuration(opts.wait, '--wait');
      const client = new TernClient(opts.host);
      let info = await client.setBalloon(name, targetBytes);
      const end = Date.now() + waitMs;
      while (waitMs > 0 && info.balloon !== undefined && info.balloon.actualBytes !== info.balloon.targetBytes && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 100));
        info = await client.getVm(name);
      }
      if (opts.json === true) printJson(info);
      else process.stdout.write(`VM ${info.name} on host ${info.host}: ${info.balloon !== undefined ? describeBalloon(info) : 'no balloon'}\n`);
      if (waitMs > 0 && info.balloon?.actualBytes !== info.balloon?.targetBytes) throw new CliError(`VM ${name}: the guest did not reach the balloon target within ${formatDuration(waitMs)}`);
    });

  withHostOptions(vm.command('console'))
    .description("print a VM's console history (all of it: the history travels with the VM), optionally following new output")
    .argument('<name>', 'VM name')
    .option('-f, --follow', 'keep printing new output until Ctrl-C, the guest powers off or the VM is stopped; follows the VM when it migrates')
    .option('--wait <duration>', 'with --follow: if the VM is not on the host yet, wait this long for it to arrive (on a migration destination: from its first instruction there)')
    .addHelpText('after', examples([
      'tern vm console v1',
      'tern vm console v1 --follow',
      'tern vm console v1 --follow --wait 5min --host 127.0.0.1:7002   # on the destination, before the migration',
      'tern vm console v1 --json        # {"vm":"v1","host":"a","bytes":N,"text":"..."}',
      'tern vm console v1 -f --json     # one {"data":"..."} line per chunk',
    ]))
    .action(async (name: string, opts: HostOpts & { follow?: boolean; wait?: string }) => {
      const client = new TernClient(opts.host);
      if (opts.wait !== undefined && opts.follow !== true) throw new UsageError('--wait needs --follow');
      const waitMs = opts.wait !== undefined ? Math.round(parseDuration(opts.wait, '--wait')) : 0;
      if (waitMs > 3_600_000) throw new UsageError(`--wait: '${opts.wait}' is longer than an hour`);
      process.stdout.on('error', (e: NodeJS.ErrnoException) => process.exit(e.code === 'EPIPE' ? 0 : 74));
      if (opts.follow !== true) {
        const bytes = await client.console(name);
        if (opts.json === true) {
          const info = await client.getVm(name).catch(() => undefined);
          printJson({ vm: name, host: info?.host ?? client.address, bytes: bytes.length, text: bytes.toString('utf8') });
        } else {
          process.stdout.write(bytes);
        }
        return;
      }
      await followConsole(client, name, opts.json === true, waitMs);
    });
}

/**
 * Prints the console and its new output; when the VM migrates, follows it to its new host and
 * goes on from where it was (the history travels with the VM, so the bytes already shown are
 * skipped there). That is exact while the VM's whole output is within the history the machine
 * keeps (CONSOLE_HISTORY_BYTES); beyond that it stops with a note instead of guessing.
 */
async function followConsole(first: TernClient, name: string, json: boolean, waitMs = 0): Promise<void> {
  let client = first;
  let printed = 0;
  for (let n = 0; ; n++) {
    const wait = n === 0 && waitMs > 0 ? `&wait=${waitMs}` : '';
    const res = await client.stream(`/v1/vms/${encodeURIComponent(name)}/console?follow=1${wait}`, wait !== '' ? waitMs + 10_000 : undefined);
    const hostName = res.headers['x-tern-host'];
    let skip = printed;
    await new Promise<void>((resolve, reject) => {
      res.on('data', (chunk: Buffer) => {
        let c = chunk;
        if (skip > 0) {
          const n = Math.min(skip, c.length);
          skip -= n;
          c = c.subarray(n);
          if (c.length === 0) return;
        }
        printed += c.length;
        if (json) process.stdout.write(JSON.stringify({ data: c.toString('utf8') }) + '\n');
        else process.stdout.write(c);
      });
      res.on('end', resolve);
      res.on('error', reject);
      res.on('aborted', () => reject(new CliError(`the connection to ${client.address} broke`)));
    });
    const where = typeof hostName === 'string' ? hostName : client.address;
    const t = res.trailers;
    switch (t['x-tern-end']) {
      case 'exited': {
        const info = await client.getVm(name).catch(() => undefined);
        process.stderr.write(`\ntern: ${name} powered off (exit code ${info?.exitCode ?? '?'})\n`);
        return;
      }
      case 'deleted':
        process.stderr.write(`\ntern: ${name} was stopped on host ${where}\n`);
        return;
      case 'shutdown':
        process.stderr.write(`\ntern: host ${where} shut down\n`);
        return;
      case 'slow-reader':
        throw new CliError(`host ${where} dropped the console stream: output was not read fast enough`);
      case 'migrated': {
        const to = t['x-tern-to'];
        const dest = t['x-tern-destination'] ?? '?';
        if (to === undefined || printed >= CONSOLE_HISTORY_BYTES) {
          process.stderr.write(`\ntern: ${name} migrated to host ${dest}; follow it there: tern vm console ${name} --follow --host ${to ?? '<destination>'}\n`);
          return;
        }
        process.stderr.write(`\ntern: ${name} migrated to host ${dest} (${to}); following it there\n`);
        client = new TernClient(to);
        continue;
      }
      default:
        // The connection ended without saying why (the host went away).
        throw new CliError(`the console stream from ${where} ended unexpectedly`);
    }
  }
}


/** How long `vm balloon --wait` waits for the guest by default. */
const DEFAULT_BALLOON_WAIT_MS = 10_000;

function describeBalloon(info: VmInfo): string {
  const b = info.balloon!;
  if (!b.driver) return `no balloon driver in the guest (keeps all ${formatBytes(info.memBytes)})`;
  const follows = b.actualBytes === b.targetBytes ? '' : ` (target ${formatBytes(b.targetBytes)})`;
  return `guest keeps ${formatBytes(b.actualBytes)} of ${formatBytes(info.memBytes)}${follows}, ${formatBytes(b.balloonedBytes)} in the balloon${b.freePageHint ? ', free page hinting' : ''}`;
}

/** --expose/--gateway checked here, so a typo is a usage error before anything is uploaded. */
function cliNetwork(expose: readonly string[], gateway: string | undefined): { expose?: string[]; gateway?: string } {
  try {
    const exposures = expose.map((x) => parseExposure(x, '--expose'));
    checkExposures(exposures);
    if (gateway === undefined) {
      if (exposures.length > 0) throw new UsageError('--expose needs --gateway (the gateway that listens on those ports)');
      return {};
    }
    return { expose: exposures.map((x) => `${x.hostPort}:${x.vmPort}`), gateway: normalizeGateway(gateway) };
  } catch (e) {
    if (e instanceof NetConfigError) throw new UsageError(e.message.replace(/^gateway:/, '--gateway:'));
    throw e;
  }
}
