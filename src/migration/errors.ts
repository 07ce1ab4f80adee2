import type { MigrationStage } from './report.js';
import type { AbortReason } from './wire/messages.js';

/** Why a migration ended before commitment: where, why, and who is to blame. */
export class MigrationError extends Error {
  constructor(
    readonly stage: MigrationStage,
    message: string,
    readonly opts: {
      /** 'cancelled' for cancel(); everything else is 'failed'. */
      readonly status?: 'failed' | 'cancelled';
      /** The peer the failure came from (refusal, abort, lost connection). */
      readonly peer?: string;
      /** What to tell the peer in an ABORT; undefined: the peer already knows (it aborted or vanished). */
      readonly abort?: AbortReason;
    } = {},
  ) {
    super(message);
    this.name = 'MigrationError';
  }

  get status(): 'failed' | 'cancelled' {
    return this.opts.status ?? 'failed';
  }
}

export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
  }
  return String(e);
}
