import type { AccessSize, Bus, MmioDevice } from '../bus.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/**
 * The sifive_test finisher (QEMU hw/misc/sifive_test.c): a write to offset 0 whose low 16 bits
 * are 0x5555 powers off (exit 0), 0x3333 fails with exit code value >>> 16, 0x7777 resets.
 * Other values are ignored, and reads return 0, as in QEMU.
 */

export const FINISHER_FAIL = 0x3333;
export const FINISHER_PASS = 0x5555;
export const FINISHER_RESET = 0x7777;

export class SifiveTest implements MmioDevice, Stateful {
  readonly name = 'test';
  readonly stateId = 'test';
  readonly stateVersion = 1;

  constructor(private readonly bus: Pick<Bus, 'requestExit'>) {}

  read(_offset: number, _size: AccessSize): number {
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    // QEMU's region takes only 32-bit accesses.
    if (offset !== 0 || size !== 4) return;
    const status = value & 0xffff;
    const code = (value >>> 16) & 0xffff;
    if (status === FINISHER_PASS) this.bus.requestExit(0, false);
    else if (status === FINISHER_FAIL) this.bus.requestExit(code, false);
    else if (status === FINISHER_RESET) this.bus.requestExit(0, true);
  }

  /** Stateless; the section exists so every device has the same shape. */
  saveState(_w: StateWriter): void {}

  restoreState(r: StateReader, version: number): void {
    if (version !== 1) r.fail(`unsupported test state version ${version}`);
  }
}
