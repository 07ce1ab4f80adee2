// Through a real vCPU thread: a tiny guest replays a register script that sets up the vsock device
// (queues laid out by the test in shared RAM), then sleeps in wfi; packets flow both ways through
// the VsockHostPort, and the balloon's host port reaches the device through the signal slots.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VsockOp, VsockType, encodeVsockPacket } from '../../src/machine/devices/virtio/vsock-packet.js';
import { RAM_BASE } from '../../src/machine/memory/layout.js';
import { GuestRam } from '../../src/machine/memory/ram.js';
import { Vcpu } from '../../src/machine/vcpu/vcpu.js';
import { Reg, addi, beq, j, li, lw, sw, wfi } from '../helpers/rv32asm.js';
import { ScriptPort, TestDriver } from './virtio-driver.js';

const MiB = 1024 * 1024;
const SCRIPT_AT = 0x100;

/** A raw image: replay (addr, value) word stores from the table at SCRIPT_AT until addr 0, then wfi forever. */
function scriptImage(writes: Array<[number, number]>): Uint8Array {
  const code = [
    ...li(Reg.t0, RAM_BASE + SCRIPT_AT),
    lw(Reg.t1, Reg.t0, 0), // loop:
    beq(Reg.t1, Reg.zero, 20),
    lw(Reg.t2, Reg.t0, 4),
    sw(Reg.t2, Reg.t1, 0),
    addi(Reg.t0, Reg.t0, 8),
    j(-20),
    wfi(), // done:
    j(-4),
  ];
  const img = new Uint8Array(SCRIPT_AT + 8 * (writes.length + 1));
  const dv = new DataView(img.buffer);
  code.forEach((w, i) => dv.setUint32(4 * i, w, true));
  writes.forEach(([a, v], i) => {
    dv.setUint32(SCRIPT_AT + 8 * i, a, true);
    dv.setUint32(SCRIPT_AT + 8 * i + 4, v, true);
  });
  return img;
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a packet goes guest→host and another host→guest through a vCPU thread and VsockHostPort', async () => {
  const ram = GuestRam.allocate(4 * MiB);
  const script = new ScriptPort(7);
  const d = new TestDriver(ram, script);
  d.negotiate(0, 1);
  for (const q of [0, 1, 2]) d.setupQueue(q, 8);
  const out = encodeVsockPacket({ srcCid: 3, dstCid: 2, srcPort: 1234, dstPort: 6379, type: VsockType.Stream, op: VsockOp.Request, flags: 0, bufAlloc: 65536, fwdCnt: 0 });
  d.add(1, [{ data: out.subarray(0, 44) }]);
  const rx = d.add(0, [{ len: 44 + 64, write: true }]);
  d.driverOk(); // DRIVER_OK picks up the tx chain and the posted rx buffer
  const vcpu = await Vcpu.start({
    ram,
    name: 'vsock-test',
    devices: [{ kind: 'virtio-vsock', guestCid: 3 }, { kind: 'virtio-balloon' }],
    start: { kind: 'boot', boot: { image: scriptImage(script.writes), imageName: 'script.bin', bootargs: '' } },
  });
  try {
    assert.ok(vcpu.vsock);
    assert.equal(vcpu.vsock.guestCid, 3);
    const got: Uint8Array[] = [];
    vcpu.vsock.onPacket((p) => got.push(p));
    await until('the guest packet', () => got.length === 1);
    assert.deepEqual(got[0], out);

    const reply = encodeVsockPacket({ srcCid: 2, dstCid: 3, srcPort: 6379, dstPort: 1234, type: VsockType.Stream, op: VsockOp.Rw, flags: 0, bufAlloc: 65536, fwdCnt: 0 }, new TextEncoder().encode('+PONG\r\n'));
    assert.equal(vcpu.vsock.send(reply), true);
    // The guest sleeps in wfi: the doorbell must wake the worker to deliver.
    await until('delivery into the rx buffer', () => d.usedIdx(0) === 1);
    assert.deepEqual(d.usedElem(0, 0), { id: rx.head, len: reply.length });
    assert.deepEqual(d.bytes(rx.addrs[0]!, reply.length), reply);

    assert.ok(vcpu.balloon);
    vcpu.balloon.setTarget(64);
    await until('the balloon to see its target', () => Atomics.load(ram.signals, 12) === 64);
    const id = vcpu.balloon.startFreePageHint();
    assert.equal(id, 0x8000_0001, 'the first command id, as QEMU');
    assert.equal(await vcpu.balloon.actual(), 0);

    await vcpu.pause();
    const late = encodeVsockPacket({ srcCid: 2, dstCid: 3, srcPort: 6379, dstPort: 1234, type: VsockType.Stream, op: VsockOp.Rw, flags: 0, bufAlloc: 65536, fwdCnt: 0 }, new Uint8Array(3));
    vcpu.vsock.send(late);
    assert.deepEqual(vcpu.vsock.takeUndelivered(), [late], 'a paused device takes nothing');
    const state = await vcpu.saveState();
    assert.ok(state.length > 0);
  } finally {
    await vcpu.stop();
  }
});

test('a VM without devices has no host ports', async () => {
  const ram = GuestRam.allocate(4 * MiB);
  const vcpu = await Vcpu.start({ ram, start: { kind: 'boot', boot: { image: scriptImage([]), imageName: 'idle.bin', bootargs: '' } } });
  try {
    assert.equal(vcpu.vsock, undefined);
    assert.equal(vcpu.balloon, undefined);
  } finally {
    await vcpu.stop();
  }
});
