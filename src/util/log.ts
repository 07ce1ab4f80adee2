import { destination, pino, stdTimeFunctions, type Logger as PinoLogger } from 'pino';

/**
 * Structured logs: one JSON object per line on stderr, with the context (vm, migration, stage,
 * peer) as fields. Level from TERN_LOG (trace|debug|info|warn|error|silent), default info.
 */
export type Logger = PinoLogger;

export function createLogger(fields: Record<string, unknown>, level: string = process.env.TERN_LOG ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid, ...fields }, timestamp: stdTimeFunctions.isoTime }, destination(2));
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = pino({ level: 'silent' });
