// A MigratableVm with no vCPU: RAM the test fills (and dirties) itself, a fixed state blob.
import type { GuestRam } from '../../src/machine/memory/ram.js';
import type { MigratableVm } from '../../src/migration/vm-port.js';

export function staticVm(ram: GuestRam, name: string, opts: { setThrottle?: (percent: number) => void; stateBytes?: number } = {}): MigratableVm {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) & 0xff;
  return {
    uuid: Uint8Array.from({ length: 16 }, (_, i) => (h + i) & 0xff),
    name,
    ram,
    config: { imageDigest: 'sha256:static', bootArgs: '', devices: [] },
    pause: async () => {},
    resume: () => {},
    setThrottle: opts.setThrottle ?? (() => {}),
    setDirtyLogging: async (on) => {
      if (on) ram.dirty.clear();
    },
    saveState: async () => new Uint8Array(opts.stateBytes ?? 64).fill(1),
  };
}
