// Bytes a pre-copy migration sends for the same guest with and without free page hinting and
// with and without an inflated balloon, on tern (two daemons on loopback) and on QEMU (the same
// image, migrated to /dev/null). The guest: munch in 256 MiB whose heap grew to 64 MiB and shrank
// to 8 MiB, so 56 MiB are free but dirty (test/guests/balloon-qemu.test.ts's guest).
// Usage: npm run bench:balloon   (docs/precopy.md, "Pages never sent", has the figures)
import { imagePath } from '../test/helpers/images.js';
import { http, killAll, startDaemon, tern, ternJson, waitFor, type Daemon } from '../test/host/helpers.js';
import { eventually, QemuGuest } from '../test/guests/qemu-guest.js';
import type { VmInfo } from '../src/host/api-types.js';
import type { MigrationReport } from '../src/migration/report.js';

const MiB = 1024 * 1024;
const MUNCH = imagePath('munch');
const ARGS = 'wws=1M rate=1M rss=4M report=250ms balloon=on heap=64M:500ms,8M:1000s';
const RAM = '256M';
/** With the balloon: the guest keeps this much (QEMU's `balloon` value). */
const KEEP = 64 * MiB;
const RUNS = Number(process.env.RUNS ?? 3);

interface Row {
  case: string;
  bytes: number[];
  skipped?: string;
}

async function vmInfo(d: Daemon, name: string): Promise<VmInfo> {
  return (await http(d.api, 'GET', `/v1/vms/${name}`)).json<VmInfo>();
}

async function ternOnce(a: Daemon, b: Daemon, name: string, hint: boolean, balloon: boolean): Promise<MigrationReport> {
  const s = await tern(['vm', 'start', MUNCH, '--host', a.api, '--name', name, '--mem', RAM, '--append', ARGS]);
  if (s.code !== 0) throw new Error(s.stderr);
  const shrunk = await waitFor(async () => / heap=8388608 /.test((await tern(['vm', 'console', name, '--host', a.api])).stdout), 60_000, 200);
  if (!shrunk) throw new Error('the heap did not shrink');
  await waitFor(async () => (await vmInfo(a, name)).balloon?.driver === true, 10_000);
  if (balloon) {
    const r = await tern(['vm', 'balloon', name, String(KEEP), '--wait', '30s', '--host', a.api]);
    if (r.code !== 0) throw new Error(r.stderr);
  }
  const r = await ternJson<MigrationReport>(['migrate', name, '--from', a.api, '--to', b.api, '--verify', ...(hint ? [] : ['--no-free-page-hint'])], 300_000);
  if (r.value.status !== 'completed' || r.value.ramDigestMatch !== true) throw new Error(`${name}: ${JSON.stringify(r.value.error)} digest ${r.value.ramDigestMatch}`);
  await tern(['vm', 'stop', name, '--host', b.api]);
  return r.value;
}

async function qemuOnce(hint: boolean, balloon: boolean): Promise<number> {
  const dev = hint ? ['-object', 'iothread,id=io1', '-device', 'virtio-balloon-device,free-page-hint=on,iothread=io1'] : ['-device', 'virtio-balloon-device'];
  const g = new QemuGuest(MUNCH, ARGS, dev, RAM);
  try {
    await g.connect();
    await g.qmp('migrate-set-parameters', { 'max-bandwidth': 64 * MiB });
    if (!(await eventually(async () => /heap=8388608 /.test(g.output), 60_000))) throw new Error('qemu: the heap did not shrink');
    if (balloon) {
      await g.qmp('balloon', { value: KEEP });
      if (!(await eventually(async () => (await g.qmp('query-balloon')).actual === KEEP, 30_000))) throw new Error('qemu: balloon not reached');
    }
    await g.qmp('migrate', { uri: 'exec:cat > /dev/null' });
    let info: Record<string, unknown> = {};
    await eventually(async () => {
      info = await g.qmp('query-migrate');
      return info.status === 'completed' || info.status === 'failed';
    }, 120_000);
    if (info.status !== 'completed') throw new Error(`qemu migration ${String(info.status)}`);
    return (info.ram as Record<string, number>).transferred;
  } finally {
    await g.stop();
  }
}

async function main(): Promise<void> {
  const [a, b] = await Promise.all([startDaemon('bench-a'), startDaemon('bench-b')]);
  const rows: Row[] = [];
  let n = 0;
  try {
    for (const [hint, balloon] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      const label = `${hint ? 'hinting' : 'no hinting'}, ${balloon ? `balloon (keeps ${KEEP / MiB} MiB)` : 'no balloon'}`;
      const t: Row = { case: `tern: ${label}`, bytes: [] };
      const q: Row = { case: `QEMU: ${label}`, bytes: [] };
      for (let i = 0; i < RUNS; i++) {
        const rep = await ternOnce(a, b, `b${n++}`, hint, balloon);
        t.bytes.push(rep.bytesTransferred);
        t.skipped = JSON.stringify(rep.skippedPages);
        q.bytes.push(await qemuOnce(hint, balloon));
      }
      rows.push(t, q);
      process.stderr.write(`${t.case}: ${t.bytes.join(', ')}; ${q.case}: ${q.bytes.join(', ')}\n`);
    }
  } finally {
    killAll();
  }
  const mb = (v: number): string => (v / 1e6).toFixed(1);
  process.stdout.write(`| case (${RUNS} runs, median) | MB sent | runs | skipped pages (last tern run) |\n|---|---|---|---|\n`);
  for (const r of rows) {
    const sorted = [...r.bytes].sort((x, y) => x - y);
    process.stdout.write(`| ${r.case} | ${mb(sorted[Math.floor(sorted.length / 2)]!)} | ${r.bytes.map(mb).join(', ')} | ${r.skipped ?? ''} |\n`);
  }
}

main().catch((e: unknown) => {
  killAll();
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
