/* virtio-mmio version 2 transport and split virtqueues (virtio 1.x, §2.7 and §4.2), shared by
 * the runtime's device drivers. Guest physical addresses equal pointers (M-mode, no paging). */
#ifndef VIRTIO_H
#define VIRTIO_H

#include "runtime.h"

#define VIRTIO_MMIO_BASE    0x10001000u
#define VIRTIO_MMIO_STRIDE  0x1000u
#define VIRTIO_MMIO_SLOTS   8u
#define VIRTIO_MMIO_IRQ(slot) (1u + (slot))

/* register offsets (§4.2.2) */
#define VIRTIO_MMIO_MAGIC           0x000u  /* "virt" */
#define VIRTIO_MMIO_VERSION         0x004u
#define VIRTIO_MMIO_DEVICE_ID       0x008u
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010u
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014u
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020u
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024u
#define VIRTIO_MMIO_QUEUE_SEL       0x030u
#define VIRTIO_MMIO_QUEUE_NUM_MAX   0x034u
#define VIRTIO_MMIO_QUEUE_NUM       0x038u
#define VIRTIO_MMIO_QUEUE_READY     0x044u
#define VIRTIO_MMIO_QUEUE_NOTIFY    0x050u
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060u
#define VIRTIO_MMIO_INTERRUPT_ACK   0x064u
#define VIRTIO_MMIO_STATUS          0x070u
#define VIRTIO_MMIO_QUEUE_DESC_LOW  0x080u
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084u
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW  0x090u
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094u
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW  0x0a0u
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4u
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fcu
#define VIRTIO_MMIO_CONFIG          0x100u

#define VIRTIO_MAGIC_VALUE  0x74726976u

/* device status bits (§2.1) */
#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER      2u
#define VIRTIO_STATUS_DRIVER_OK   4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED      128u

#define VIRTIO_INT_USED   1u    /* InterruptStatus: a used buffer notification */
#define VIRTIO_INT_CONFIG 2u    /* InterruptStatus: configuration change */

#define VIRTIO_F_VERSION_1 32u

#define VIRTQ_DESC_F_NEXT  1u
#define VIRTQ_DESC_F_WRITE 2u

#define VIRTQ_MAX_SIZE 128u     /* rings, descriptors and cookies fit in one page */

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct virtio_dev;

struct virtq {
    struct virtio_dev *dev;
    uint16_t index, size;
    uint16_t free_head, num_free;
    uint16_t avail_idx, last_used;
    volatile struct virtq_desc *desc;
    volatile uint16_t *avail;          /* flags, idx, ring[size], used_event */
    volatile uint16_t *used_hdr;       /* flags, idx */
    volatile struct virtq_used_elem *used;
    void **cookies;                    /* per head descriptor, given back by virtq_get */
};

struct virtio_dev {
    uint32_t base, slot, device_id;
    uint64_t features;                 /* negotiated */
    volatile uint32_t irq_status;      /* InterruptStatus bits accumulated by the IRQ handler */
    volatile uint32_t interrupts;
};

/* One buffer segment: device-readable (write = 0) or device-writable (write = 1). */
struct virtq_seg {
    const void *addr;
    uint32_t len;
    uint32_t write;
};

/* Finds the device with this DeviceID in the 8 slots and takes it through reset,
 * ACKNOWLEDGE, DRIVER and feature negotiation: VERSION_1 plus those of `wanted` the device
 * offers. Returns NULL (after printing why) if there is none or it cannot be driven. */
struct virtio_dev *virtio_open(uint32_t device_id, uint64_t wanted);
/* Sets up queue `index` with at most `max` entries (rings from region_alloc); NULL if the
 * device has no such queue. Must be called between virtio_open and virtio_ready. */
struct virtq *virtq_setup(struct virtio_dev *d, uint16_t index, uint16_t max);
/* DRIVER_OK, and the device's IRQ routed through the PLIC. */
void virtio_ready(struct virtio_dev *d);
int virtio_has(const struct virtio_dev *d, uint32_t feature);
uint32_t virtio_config32(struct virtio_dev *d, uint32_t off);
void virtio_config_write32(struct virtio_dev *d, uint32_t off, uint32_t v);
/* Returns and clears the interrupt bits seen since the last call. */
uint32_t virtio_take_irq(struct virtio_dev *d);
uint32_t virtio_status(struct virtio_dev *d);

/* Makes a chain of `n` segments available; returns the head descriptor or -1 if there are
 * not enough free descriptors. Does not notify. */
int virtq_add(struct virtq *q, const struct virtq_seg *segs, int n, void *cookie);
void virtq_kick(struct virtq *q);
/* Takes one used buffer: returns 1 and its cookie and written length, or 0 if none. */
int virtq_get(struct virtq *q, void **cookie, uint32_t *len);
static inline uint16_t virtq_free(const struct virtq *q) { return q->num_free; }
/* Sleeps (wfi) until the device interrupts or `deadline` (mtime ticks) passes. */
void virtio_wait(struct virtio_dev *d, uint64_t deadline);

#endif
