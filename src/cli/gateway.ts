import { hostname } from 'node:os';
import type { Command } from 'commander';
import { parseHostPort } from '../host/address.js';
import { Gateway, type GatewayStatus } from '../net/gateway.js';
import { fetchGatewayStatus } from '../net/gateway-client.js';
import { TableError } from '../net/gateway-table.js';
import { createLogger } from '../util/log.js';
import { CliError } from './client.js';
import { examples, keyValues, printJson, table } from './output.js';

interface ServeOpts {
  listen: string;
  name: string;
  state?: string;
  exposeHost?: string;
  json?: boolean;
}

export function registerGateway(program: Command): void {
  const gw = program
    .command('gateway')
    .description('run the gateway that holds clients\' TCP connections and relays them to VMs wherever they run (docs/networking.md)')
    .addHelpText('after', examples([
      'tern gateway serve --listen 127.0.0.1:7000 --state gateway.json &',
      'tern vm start guests/images/kv.elf --host 127.0.0.1:7001 --name kv1 --expose 6379:6379 --gateway 127.0.0.1:7000',
      'redis-cli -p 6379 ping',
    ]));

  gw.command('serve')
    .description('run the gateway: host daemons link to --listen; each VM\'s exposed ports are listened on here')
    .option('-l, --listen <addr>', 'where host daemons link to the gateway, host:port (port 0: any free port)', '127.0.0.1:7000')
    .option('-n, --name <name>', 'gateway name, shown to hosts and in logs', hostname())
    .option('--state <file>', 'keep the table (VMs, exposed ports, location epochs) in this JSON file; a restarted gateway listens on the same ports again')
    .option('--expose-host <host>', 'address the exposed ports bind to (default: the --listen host)')
    .option('--json', 'print the start line and then one status line per event (host linked/lost, VM attached/moved/withdrawn) as JSON')
    .addHelpText('after', `
Prints one line with its address once it serves, then logs JSON lines to stderr (level from
TERN_LOG). A client's connection to an exposed port is relayed to the VM's vsock port with byte
sequence numbers, so it survives live migrations of the VM. A host that vanishes has its
clients' connections reset (RST). SIGTERM or SIGINT resets every client and exits 0.
${examples([
  'tern gateway serve --listen 127.0.0.1:7000',
  'tern gateway serve --listen 0.0.0.0:7000 --state /var/lib/tern/gateway.json --json',
])}`)
    .action(async (opts: ServeOpts) => {
      const listen = parseHostPort(opts.listen, '--listen', { allowZero: true });
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(opts.name)) throw new CliError(`--name: '${opts.name}' is not a valid gateway name (letters, digits, '.', '_', '-')`, 2);
      const exposeHost = opts.exposeHost ?? listen.host;
      const log = createLogger({ gateway: opts.name });
      const gateway = new Gateway({ name: opts.name, exposeHost, log, ...(opts.state !== undefined ? { stateFile: opts.state } : {}) });
      let bound: { host: string; port: number };
      try {
        bound = await gateway.start(listen.host, listen.port);
      } catch (e) {
        if (e instanceof TableError) throw e;
        const err = e as NodeJS.ErrnoException;
        const why = err.code === 'EADDRINUSE' ? 'the address is already in use' : err.code === 'EADDRNOTAVAIL' ? 'no such local address' : err.code === 'EACCES' ? 'permission denied' : err.message;
        throw new CliError(`cannot listen for host links on ${opts.listen}: ${why}`);
      }
      (globalThis as { ternServing?: boolean }).ternServing = true;
      const listenText = `${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`;
      if (opts.json === true) {
        process.stdout.write(JSON.stringify({ event: 'serving', name: opts.name, listen: listenText, pid: process.pid, state: opts.state ?? null }) + '\n');
        gateway.on('status', (ev) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...ev }) + '\n'));
      } else {
        process.stdout.write(`tern gateway ${opts.name}: host links on ${listenText}, exposed ports on ${exposeHost}${opts.state !== undefined ? `, table in ${opts.state}` : ''} (pid ${process.pid})\n`);
      }
      process.stdout.on('error', () => {});
      let stopping = false;
      const onSignal = (): void => {
        if (stopping) process.exit(1);
        stopping = true;
        const t = setTimeout(() => process.exit(1), 5000);
        t.unref();
        gateway.close().then(() => process.exit(0), () => process.exit(1));
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      process.on('uncaughtException', (e) => log.error({ err: e.stack ?? e.message }, 'uncaught exception (a bug in tern); still serving'));
      process.on('unhandledRejection', (e) => log.error({ err: e instanceof Error ? (e.stack ?? e.message) : String(e) }, 'unhandled rejection (a bug in tern); still serving'));
    });

  gw.command('status')
    .description('show a running gateway: linked hosts, VMs (where they run, exposed ports, connections)')
    .option('-g, --gateway <addr>', 'the gateway\'s --listen address, host:port', '127.0.0.1:7000')
    .option('--json', 'print the status as one JSON object')
    .addHelpText('after', examples(['tern gateway status --gateway 127.0.0.1:7000', 'tern gateway status --json | jq .vms']))
    .action(async (opts: { gateway: string; json?: boolean }) => {
      const target = parseHostPort(opts.gateway, '--gateway');
      let st: GatewayStatus;
      try {
        st = (await fetchGatewayStatus(target)) as GatewayStatus;
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      if (opts.json === true) {
        printJson(st);
        return;
      }
      process.stdout.write(keyValues([
        ['gateway', `${st.name} (${st.listen})`],
        ['hosts', st.hosts.length === 0 ? '(none linked)' : st.hosts.map((h) => `${h.host} (${h.remote})`).join(', ')],
        ['connections', String(st.connections)],
      ]));
      if (st.vms.length > 0) {
        process.stdout.write('\n' + table(['VM', 'HOST', 'EPOCH', 'EXPOSES', 'CONNECTIONS'], st.vms.map((v) => [v.name, v.host ?? '(not linked)', String(v.epoch), v.exposures.map((x) => `${x.hostPort}:${x.vmPort}`).join(', '), String(v.connections)])));
      }
    });
}
