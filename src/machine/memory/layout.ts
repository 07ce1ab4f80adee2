// The physical memory map of QEMU's `virt` board (hw/riscv/virt.c), which tern reproduces so the
// same guest image runs on both hypervisors.
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/**
 * A page's dirty mark is a mask of the 512-byte blocks the CPU stored to (dirty-log.ts): bit k
 * stands for bytes [k * 512, (k + 1) * 512) of the page. Any other writer marks all eight.
 */
export const BLOCK_SHIFT = 9;
export const BLOCK_SIZE = 1 << BLOCK_SHIFT;
/** The mark of a page whose writes are not known block by block. */
export const ALL_BLOCKS = 0xff;

export const TEST_BASE = 0x0010_0000; // sifive_test finisher
export const TEST_SIZE = 0x1000;
export const CLINT_BASE = 0x0200_0000;
export const CLINT_SIZE = 0x1_0000;
export const PLIC_BASE = 0x0c00_0000;
export const PLIC_SIZE = 0x60_0000; // QEMU sizes it for its harts; ours has one
export const UART0_BASE = 0x1000_0000;
export const UART0_SIZE = 0x100;
export const UART0_IRQ = 10;
export const VIRTIO_BASE = 0x1000_1000;
export const VIRTIO_SIZE = 0x1000;
export const VIRTIO_COUNT = 8;
export const VIRTIO_IRQ = 1; // slot i uses IRQ 1 + i
export const RAM_BASE = 0x8000_0000;

export const TIMEBASE_HZ = 10_000_000; // CLINT mtime frequency on virt

export const DEFAULT_RAM_BYTES = 128 * 1024 * 1024;
export const MAX_RAM_BYTES = 2 * 1024 * 1024 * 1024 - PAGE_SIZE; // a SharedArrayBuffer caps just under 2 GiB on Node 20
export const MIN_RAM_BYTES = 1024 * 1024;
