// Guest RAM on transparent huge pages (THP). Guest RAM is a SharedArrayBuffer whose memory glibc's
// malloc maps; with the tunable glibc.malloc.hugetlb=1 (glibc 2.35 and later) malloc asks the
// kernel for huge pages on those mappings (madvise MADV_HUGEPAGE), which the kernel honours when
// /sys/kernel/mm/transparent_hugepage/enabled is 'always' or 'madvise'. A destination writing a
// VM's RAM for the first time then takes one page fault per 2 MiB instead of one per 4 KiB
// (measured on a 2-vCPU machine: round 1 of an unlimited migration into fresh RAM 0.10-0.11 GB/s
// without, 0.22-0.25 GB/s with). QEMU does the same for its RAM (MADV_HUGEPAGE). The tunable is
// read when the process starts, so it is set for the daemon by whoever starts it: the `tern`
// command (bin/tern) and every place tern spawns a daemon (withHugePages).
import { readFileSync } from 'node:fs';

/** The glibc tunable that puts malloc's large mappings on transparent huge pages. */
export const HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb=1';

/** Set TERN_HUGE_PAGES=0 to start daemons without the tunable. */
const OPT_OUT = 'TERN_HUGE_PAGES';

/**
 * `env` with HUGE_PAGES_TUNABLE added to GLIBC_TUNABLES, for spawning a daemon. Left as it is
 * when the user set glibc.malloc.hugetlb themselves or TERN_HUGE_PAGES=0.
 */
export function withHugePages(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const tunables = env.GLIBC_TUNABLES ?? '';
  if (env[OPT_OUT] === '0' || tunables.includes('glibc.malloc.hugetlb=')) return env;
  return { ...env, GLIBC_TUNABLES: tunables === '' ? HUGE_PAGES_TUNABLE : `${tunables}:${HUGE_PAGES_TUNABLE}` };
}

export interface HugePagesStatus {
  /** Whether this process's large allocations (guest RAM) ask for huge pages. */
  readonly requested: boolean;
  /** The kernel's THP mode: always, madvise, never, or unknown where the file cannot be read. */
  readonly kernelMode: string;
  /** One line for the log: what is on and, if not, why. */
  readonly note: string;
}

/** What this process asked for at its start (GLIBC_TUNABLES) and what the kernel allows. */
export function hugePagesStatus(env: NodeJS.ProcessEnv = process.env): HugePagesStatus {
  const requested = /(^|:)glibc\.malloc\.hugetlb=[12](:|$)/.test(env.GLIBC_TUNABLES ?? '');
  let kernelMode = 'unknown';
  try {
    const m = /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'));
    if (m !== null) kernelMode = m[1]!;
  } catch {
    /* not Linux, or no THP: unknown */
  }
  let note: string;
  if (kernelMode === 'never') note = 'off: the kernel has transparent huge pages disabled (/sys/kernel/mm/transparent_hugepage/enabled)';
  else if (kernelMode === 'always') note = requested ? 'on' : 'on (the kernel gives every large mapping huge pages)';
  else if (!requested) note = `off: GLIBC_TUNABLES lacks ${HUGE_PAGES_TUNABLE} (start the daemon with the tern command, or set it)`;
  else note = kernelMode === 'madvise' ? 'on' : `requested; kernel mode ${kernelMode}`;
  return { requested, kernelMode, note };
}

