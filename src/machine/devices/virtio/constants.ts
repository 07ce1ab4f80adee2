// virtio 1.x constants (OASIS virtio v1.2): the MMIO register map (§4.2.2), device status bits
// (§2.1), feature bits (§6) and split-virtqueue descriptor flags (§2.7.5).

/** virtio-mmio registers, offsets from the slot's base. */
export const enum Reg {
  MagicValue = 0x000,
  Version = 0x004,
  DeviceId = 0x008,
  VendorId = 0x00c,
  DeviceFeatures = 0x010,
  DeviceFeaturesSel = 0x014,
  DriverFeatures = 0x020,
  DriverFeaturesSel = 0x024,
  QueueSel = 0x030,
  QueueNumMax = 0x034,
  QueueNum = 0x038,
  QueueReady = 0x044,
  QueueNotify = 0x050,
  InterruptStatus = 0x060,
  InterruptAck = 0x064,
  Status = 0x070,
  QueueDescLow = 0x080,
  QueueDescHigh = 0x084,
  QueueDriverLow = 0x090,
  QueueDriverHigh = 0x094,
  QueueDeviceLow = 0x0a0,
  QueueDeviceHigh = 0x0a4,
  ConfigGeneration = 0x0fc,
  Config = 0x100,
}

/** "virt" in little-endian ASCII. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** virtio-mmio version 2 (virtio 1.x, non-legacy). */
export const VIRTIO_MMIO_VERSION = 2;
/** QEMU's vendor id ("QEMU" little-endian), which QEMU's virt board reports too. */
export const VIRTIO_VENDOR_QEMU = 0x554d4551;

/** Largest queue any tern device offers (QueueNumMax). */
export const QUEUE_NUM_MAX = 256;

/** Device status bits (§2.1). */
export const enum Status {
  Acknowledge = 0x01,
  Driver = 0x02,
  DriverOk = 0x04,
  FeaturesOk = 0x08,
  DeviceNeedsReset = 0x40,
  Failed = 0x80,
}

/** InterruptStatus bits (§4.2.2). */
export const enum Isr {
  UsedBuffer = 0x1,
  ConfigChange = 0x2,
}

/** VIRTIO_F_VERSION_1 is bit 32: bit 0 of the high feature word. */
export const FEATURE_VERSION_1_HI = 1 << 0;

/** Split virtqueue descriptor flags. */
export const enum DescFlag {
  Next = 1,
  Write = 2,
  Indirect = 4,
}

/** avail.flags: the driver asks for no used-buffer interrupts. */
export const AVAIL_F_NO_INTERRUPT = 1;

/** Device IDs (§5). */
export const enum DeviceId {
  Balloon = 5,
  Vsock = 19,
}
