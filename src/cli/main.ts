#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { TERN_VERSION } from '../host/version.js';
import { CliError } from './client.js';
import { registerDemo } from './demo.js';
import { registerGateway } from './gateway.js';
import { registerHost } from './host.js';
import { registerMigrate } from './migrate.js';
import { registerRun } from './run.js';
import { UsageError } from './units.js';
import { registerVm } from './vm.js';

const program = new Command();
program
  .name('tern')
  .description('tern: a virtual machine monitor for RV32 guests (QEMU virt layout), built for live migration')
  .version(TERN_VERSION)
  .showHelpAfterError('(add --help for usage and examples)')
  // Options belong to the command they follow (`tern migrate list --json`); needed by `migrate`.
  .enablePositionalOptions()
  // Usage errors exit 2 (see below), not commander's 1; inherited by every subcommand.
  .exitOverride();
registerRun(program);
registerHost(program);
registerVm(program);
registerMigrate(program);
registerDemo(program);
registerGateway(program);

/** Commands that serve until killed (daemons) say so by setting this flag. */
function keepsRunning(): boolean {
  return (globalThis as { ternServing?: boolean }).ternServing === true;
}

/** Errors that are the user's input, not a bug in tern: a clear message and exit code 2. */
function isInputError(e: unknown): e is Error {
  return e instanceof Error && ['UsageError', 'TableError', 'ImageError', 'RamSizeError', 'StateFormatError', 'FdtPlacementError'].includes(e.name);
}

try {
  await program.parseAsync(process.argv);
  // Long-lived handles (stdin, timers) must not keep a finished command alive.
  if (!keepsRunning()) process.exit(process.exitCode ?? 0);
} catch (e) {
  // --help and --version exit 0; a usage error (unknown option, missing argument) exits 2.
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  if (e instanceof CliError) {
    process.stderr.write(`tern: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  if (isInputError(e) || e instanceof UsageError) {
    process.stderr.write(`tern: ${e.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`tern: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(70);
}
