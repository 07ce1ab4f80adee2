/**
 * The gateway's table: which VM (by uuid) owns which exposed port, and the latest location epoch
 * seen for it. Persisted as JSON (docs/networking.md, "State file") so a restarted gateway listens
 * on the same ports again and refuses stale announcements.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { Exposure } from './link-protocol.js';

export const TABLE_VERSION = 1;

export interface TableEntry {
  /** 32 hex digits. */
  readonly uuid: string;
  name: string;
  epoch: number;
  exposures: Exposure[];
  /** The host that last announced the VM (for status; routes are rebuilt when hosts relink). */
  host: string;
}

export class TableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

function isPort(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

/** Parses a state file's text; every field checked, so a damaged file is a clear error. */
export function parseTable(text: string, file: string): TableEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new TableError(`gateway state file ${file} is not JSON: ${(e as Error).message}`);
  }
  const bad = (why: string): TableError => new TableError(`gateway state file ${file}: ${why}`);
  if (doc === null || typeof doc !== 'object') throw bad('not an object');
  const d = doc as { version?: unknown; vms?: unknown };
  if (d.version !== TABLE_VERSION) throw bad(`version ${JSON.stringify(d.version)} is not supported (this tern reads version ${TABLE_VERSION})`);
  if (!Array.isArray(d.vms)) throw bad("'vms' is not an array");
  return d.vms.map((v: unknown, i: number): TableEntry => {
    const e = v as Partial<TableEntry> | null;
    if (e === null || typeof e !== 'object') throw bad(`vms[${i}] is not an object`);
    if (typeof e.uuid !== 'string' || !/^[0-9a-f]{32}$/.test(e.uuid)) throw bad(`vms[${i}].uuid is not 32 hex digits`);
    if (typeof e.name !== 'string') throw bad(`vms[${i}].name is not a string`);
    if (!isPort(e.epoch, 0, 0xffff_ffff)) throw bad(`vms[${i}].epoch is not a u32`);
    if (!Array.isArray(e.exposures)) throw bad(`vms[${i}].exposures is not an array`);
    const exposures = e.exposures.map((x: unknown, j: number): Exposure => {
      const p = x as Partial<Exposure> | null;
      if (p === null || !isPort(p.hostPort, 1, 65535) || !isPort(p.vmPort, 0, 0xffff_ffff)) throw bad(`vms[${i}].exposures[${j}] is not {hostPort, vmPort}`);
      return { hostPort: p.hostPort, vmPort: p.vmPort };
    });
    return { uuid: e.uuid, name: e.name, epoch: e.epoch, exposures, host: typeof e.host === 'string' ? e.host : '' };
  });
}

export async function loadTable(file: string): Promise<TableEntry[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TableError(`cannot read gateway state file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseTable(text, file);
}

/** Writes the table atomically (temp file + rename); saves are serialized. */
export class TableWriter {
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly file: string) {}

  save(entries: readonly TableEntry[]): Promise<void> {
    const text = JSON.stringify({ version: TABLE_VERSION, vms: entries }, null, 2) + '\n';
    this.chain = this.chain.then(async () => {
      const tmp = `${this.file}.tmp-${process.pid}`;
      await writeFile(tmp, text);
      await rename(tmp, this.file);
    });
    return this.chain;
  }
}
