import { VIRTIO_COUNT } from '../../memory/layout.js';
import { VSOCK_DEFAULT_GUEST_CID } from './vsock-packet.js';

/** A virtio device a machine is built with (the machine part of MachineConfig.devices). */
export type VirtioDeviceSpec =
  | { readonly kind: 'virtio-vsock'; readonly guestCid: number }
  | { readonly kind: 'virtio-balloon' };

export type VirtioDeviceKind = VirtioDeviceSpec['kind'];
export const VIRTIO_DEVICE_KINDS: readonly VirtioDeviceKind[] = ['virtio-vsock', 'virtio-balloon'];

export class DeviceConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceConfigError';
  }
}

/**
 * Checks a device list from outside (the API, a migration peer's config) and returns it typed.
 * `{kind:'virtio-vsock', guestCid?}` (default cid 3; 3..2^32-2, as Linux's vhost accepts) and
 * `{kind:'virtio-balloon'}`; at most one of each, at most 8 in all.
 */
export function parseDeviceSpecs(list: readonly { readonly kind: string; readonly [key: string]: unknown }[]): VirtioDeviceSpec[] {
  if (list.length > VIRTIO_COUNT) throw new DeviceConfigError(`${list.length} devices do not fit the ${VIRTIO_COUNT} virtio-mmio slots`);
  const out: VirtioDeviceSpec[] = [];
  for (const [i, d] of list.entries()) {
    if (out.some((o) => o.kind === d.kind)) throw new DeviceConfigError(`devices[${i}]: a second ${d.kind} is not supported`);
    if (d.kind === 'virtio-vsock') {
      const cid = d['guestCid'] ?? VSOCK_DEFAULT_GUEST_CID;
      if (typeof cid !== 'number' || !Number.isInteger(cid) || cid < 3 || cid > 0xffff_fffe) {
        throw new DeviceConfigError(`devices[${i}].guestCid: ${JSON.stringify(cid)} is not a guest CID (an integer 3..4294967294)`);
      }
      out.push({ kind: 'virtio-vsock', guestCid: cid });
    } else if (d.kind === 'virtio-balloon') {
      out.push({ kind: 'virtio-balloon' });
    } else {
      throw new DeviceConfigError(`devices[${i}]: unknown device kind '${d.kind}' (known: ${VIRTIO_DEVICE_KINDS.join(', ')})`);
    }
  }
  return out;
}

/** The virtio-mmio slot of the i-th device: like QEMU's virt, the first device takes the highest slot. */
export function slotOfDevice(i: number): number {
  return VIRTIO_COUNT - 1 - i;
}
