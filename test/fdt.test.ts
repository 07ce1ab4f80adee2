import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildBoardFdt, buildFdt, fdtAddress, FdtFormatError, FdtNode, FdtPlacementError, parseFdt, placeFdt } from '../src/machine/fdt.js';
import { GuestRam } from '../src/machine/memory/ram.js';

const MiB = 1024 * 1024;

test('builder and parser round-trip nodes, properties and the header', () => {
  const root = new FdtNode('');
  root.setU32('#address-cells', 2).setStrings('compatible', ['a,b', 'c']).setEmpty('flag').setU64('big', 0x1_0000_0002);
  root.addChild('child@1').setCells('reg', [1, 2, 3]).setString('name', 'x').addChild('grandchild').setString('s', '');
  const dtb = buildFdt(root, { bootCpuId: 0, memReserve: [{ address: 0x8000_0000, size: 0x1000 }] });
  const p = parseFdt(dtb);
  assert.equal(p.version, 17);
  assert.equal(p.totalSize, dtb.length);
  assert.deepEqual(p.memReserve, [{ address: 0x8000_0000, size: 0x1000 }]);
  assert.equal(p.root.getU32('#address-cells'), 2);
  assert.deepEqual(p.root.getStrings('compatible'), ['a,b', 'c']);
  assert.equal(p.root.getBytes('flag')!.length, 0);
  assert.deepEqual(p.root.getCells('big'), [1, 2]);
  const child = p.root.find('/child@1')!;
  assert.deepEqual(child.getCells('reg'), [1, 2, 3]);
  assert.equal(child.getString('name'), 'x');
  assert.equal(p.root.find('child@1/grandchild')!.getString('s'), '');
  assert.deepEqual(buildFdt(p.root, { memReserve: p.memReserve }), dtb, 'rebuilding the parsed tree gives the same bytes');
});

test('the header is DTB version 17 with blocks in the standard order', () => {
  const dtb = buildBoardFdt({ ramBytes: 128 * MiB, bootargs: '' });
  const dv = new DataView(dtb.buffer, dtb.byteOffset, dtb.byteLength);
  assert.equal(dv.getUint32(0), 0xd00dfeed);
  assert.equal(dv.getUint32(4), dtb.length);
  assert.equal(dv.getUint32(16), 40, 'memory reservation block right after the header');
  assert.ok(dv.getUint32(8) < dv.getUint32(12), 'structure block before strings');
  assert.equal(dv.getUint32(20), 17);
  assert.equal(dv.getUint32(24), 16);
});

test('the board tree describes RAM, bootargs, the CPU and every device as QEMU virt does', () => {
  const ram = 256 * MiB;
  const { root } = parseFdt(buildBoardFdt({ ramBytes: ram, bootargs: 'console=hvc0 port=5000' }));
  assert.equal(root.getU32('#address-cells'), 2);
  assert.equal(root.getU32('#size-cells'), 2);
  assert.equal(root.getString('compatible'), 'riscv-virtio');
  assert.equal(root.getString('model'), 'riscv-virtio,qemu');
  assert.equal(root.find('/chosen')!.getString('bootargs'), 'console=hvc0 port=5000');
  assert.equal(root.find('/chosen')!.getString('stdout-path'), '/soc/serial@10000000');
  const mem = root.find('/memory@80000000')!;
  assert.equal(mem.getString('device_type'), 'memory');
  assert.deepEqual(mem.getCells('reg'), [0, 0x8000_0000, 0, ram]);
  const cpus = root.find('/cpus')!;
  assert.equal(cpus.getU32('timebase-frequency'), 10_000_000);
  const cpu = root.find('/cpus/cpu@0')!;
  assert.equal(cpu.getString('riscv,isa'), 'rv32ima');
  assert.equal(cpu.getU32('reg'), 0);
  const intc = root.find('/cpus/cpu@0/interrupt-controller')!;
  assert.equal(intc.getString('compatible'), 'riscv,cpu-intc');
  assert.ok(intc.has('interrupt-controller'));
  const intcPh = intc.getU32('phandle')!;

  const clint = root.find('/soc/clint@2000000')!;
  assert.deepEqual(clint.getStrings('compatible'), ['sifive,clint0', 'riscv,clint0']);
  assert.deepEqual(clint.getCells('reg'), [0, 0x0200_0000, 0, 0x1_0000]);
  assert.deepEqual(clint.getCells('interrupts-extended'), [intcPh, 3, intcPh, 7]);

  const plic = root.find('/soc/plic@c000000')!;
  const plicPh = plic.getU32('phandle')!;
  assert.deepEqual(plic.getCells('reg'), [0, 0x0c00_0000, 0, 0x60_0000]);
  assert.deepEqual(plic.getCells('interrupts-extended'), [intcPh, 11, intcPh, 9]);
  assert.equal(plic.getU32('riscv,ndev'), 95);

  const uart = root.find('/soc/serial@10000000')!;
  assert.equal(uart.getString('compatible'), 'ns16550a');
  assert.deepEqual(uart.getCells('reg'), [0, 0x1000_0000, 0, 0x100]);
  assert.equal(uart.getU32('clock-frequency'), 0x384000);
  assert.equal(uart.getU32('interrupts'), 10);
  assert.equal(uart.getU32('interrupt-parent'), plicPh);

  const testDev = root.find('/soc/test@100000')!;
  assert.deepEqual(testDev.getStrings('compatible'), ['sifive,test1', 'sifive,test0', 'syscon']);
  assert.deepEqual(testDev.getCells('reg'), [0, 0x10_0000, 0, 0x1000]);
  assert.equal(root.find('/poweroff')!.getU32('regmap'), testDev.getU32('phandle'));
  assert.equal(root.find('/poweroff')!.getU32('value'), 0x5555);

  for (let i = 0; i < 8; i++) {
    const base = 0x1000_1000 + i * 0x1000;
    const v = root.find(`/soc/virtio_mmio@${base.toString(16)}`)!;
    assert.ok(v, `virtio slot ${i}`);
    assert.equal(v.getString('compatible'), 'virtio,mmio');
    assert.deepEqual(v.getCells('reg'), [0, base, 0, 0x1000]);
    assert.equal(v.getU32('interrupts'), 1 + i);
    assert.equal(v.getU32('interrupt-parent'), plicPh);
  }
});

test('empty bootargs are left out as QEMU does; virtioSlots limits the slots described', () => {
  const { root } = parseFdt(buildBoardFdt({ ramBytes: 64 * MiB, bootargs: '', virtioSlots: 2 }));
  assert.equal(root.find('/chosen')!.has('bootargs'), false);
  const slots = root.find('/soc')!.children.filter((c) => c.name.startsWith('virtio_mmio@'));
  assert.deepEqual(
    slots.map((c) => c.name),
    ['virtio_mmio@10001000', 'virtio_mmio@10002000'],
  );
  assert.throws(() => buildBoardFdt({ ramBytes: 64 * MiB, bootargs: '', virtioSlots: 9 }), RangeError);
});

test('fdtAddress matches QEMU riscv_compute_fdt_addr (checked against qemu-system-riscv32 7.2 a1)', () => {
  assert.equal(fdtAddress(128 * MiB, 2734), 0x87e0_0000);
  assert.equal(fdtAddress(256 * MiB, 4222), 0x8fe0_0000);
  assert.equal(fdtAddress(1024 * MiB, 4222), 0xbfe0_0000, 'capped below 3 GiB for RV32');
  assert.equal(fdtAddress(1536 * MiB, 4222), 0xbfe0_0000);
  assert.equal(fdtAddress(3 * MiB, 4000), 0x8020_0000);
  assert.equal(fdtAddress(2 * MiB, 4000), 0x8000_0000);
  assert.equal(fdtAddress(128 * MiB, 2 * MiB + 1), 0x87c0_0000);
});

test('fdtAddress refuses to overlap the image, as QEMU does', () => {
  assert.throws(() => fdtAddress(2 * MiB, 4000, 0x8000_1000), FdtPlacementError);
  assert.equal(fdtAddress(4 * MiB, 4000, 0x8000_1000), 0x8020_0000);
  assert.throws(() => fdtAddress(1 * MiB, 2 * MiB), FdtPlacementError);
});

test('placeFdt copies the blob into RAM at that address', () => {
  const ram = GuestRam.allocate(4 * MiB);
  const dtb = buildBoardFdt({ ramBytes: ram.bytes, bootargs: 'x=1' });
  const addr = placeFdt(ram, dtb, 0x8000_1000);
  assert.equal(addr, 0x8020_0000);
  const off = addr - 0x8000_0000;
  assert.deepEqual(ram.u8.subarray(off, off + dtb.length), dtb);
  assert.equal(parseFdt(ram.u8.subarray(off)).root.find('/chosen')!.getString('bootargs'), 'x=1');
});

test('the parser refuses malformed blobs with FdtFormatError', () => {
  const dtb = buildBoardFdt({ ramBytes: 128 * MiB, bootargs: 'a' });
  assert.throws(() => parseFdt(dtb.subarray(0, 20)), FdtFormatError);
  const badMagic = dtb.slice();
  badMagic[0] = 0;
  assert.throws(() => parseFdt(badMagic), /magic/);
  assert.throws(() => parseFdt(dtb.subarray(0, dtb.length - 1)), FdtFormatError, 'totalsize beyond the blob');
  const badToken = dtb.slice();
  const offStruct = new DataView(badToken.buffer).getUint32(8);
  new DataView(badToken.buffer).setUint32(offStruct, 7);
  assert.throws(() => parseFdt(badToken), /unknown token/);
  const badName = dtb.slice();
  const dv = new DataView(badName.buffer);
  // First property of the root: token, len, nameoff at offStruct + 8 (root name "" padded to 4).
  dv.setUint32(offStruct + 8 + 8, 0xffff);
  assert.throws(() => parseFdt(badName), /strings block/);
});

test('no corruption makes the parser throw anything but FdtFormatError', () => {
  const dtb = buildBoardFdt({ ramBytes: 128 * MiB, bootargs: 'console=ttyS0' });
  let seed = 7;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0);
  for (let i = 0; i < 3000; i++) {
    const b = dtb.slice(0, rnd() % 4 === 0 ? rnd() % dtb.length : dtb.length);
    for (let k = 0; k < 4; k++) if (b.length > 0) b[rnd() % b.length] = rnd() & 0xff;
    try {
      const p = parseFdt(b);
      // Reading properties of a damaged (but parseable) tree may fail only with FdtFormatError too.
      const walk = (n: FdtNode): void => {
        for (const k of n.props.keys()) {
          try {
            n.getStrings(k);
          } catch (e) {
            assert.ok(e instanceof FdtFormatError, String(e));
          }
        }
        n.children.forEach(walk);
      };
      walk(p.root);
    } catch (e) {
      assert.ok(e instanceof FdtFormatError, `iteration ${i}: ${String(e)}`);
    }
  }
});
