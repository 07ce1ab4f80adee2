/* virtio-mmio v2 transport and split virtqueues; see virtio.h. */
#include "virtio.h"

#define MAX_DEVS 8
static struct virtio_dev devs[MAX_DEVS];
static uint32_t ndevs;

static inline void mb_io(void) { __asm__ volatile("fence iorw, iorw" : : : "memory"); }

static inline uint32_t rd(const struct virtio_dev *d, uint32_t off) { return mmio_read32(d->base + off); }
static inline void wr(const struct virtio_dev *d, uint32_t off, uint32_t v) { mmio_write32(d->base + off, v); }

/* Probing reads slots that may not exist on every board: a load access fault there means
 * "no device", not a crash. */
static volatile uint32_t probe_faulted;
static int probe_hook(struct trap_frame *f)
{
    if (f->mcause != EXC_LOAD_ACCESS || f->mtval - VIRTIO_MMIO_BASE >= VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_STRIDE)
        return 0;
    probe_faulted = 1;
    f->x[10] = 0;           /* the probe read's destination is a0 (see probe_read) */
    f->mepc += 4;
    return 1;
}

static uint32_t probe_read(uint32_t addr)
{
    register uint32_t a0 __asm__("a0") = addr;
    __asm__ volatile("lw a0, 0(a0)" : "+r"(a0) : : "memory");
    return a0;
}

static void virtio_irq(uint32_t src)
{
    for (uint32_t i = 0; i < ndevs; i++) {
        struct virtio_dev *d = &devs[i];
        if (VIRTIO_MMIO_IRQ(d->slot) != src)
            continue;
        uint32_t s = rd(d, VIRTIO_MMIO_INTERRUPT_STATUS);
        wr(d, VIRTIO_MMIO_INTERRUPT_ACK, s);
        d->irq_status |= s;
        d->interrupts++;
    }
}

static int slot_has(uint32_t slot, uint32_t device_id)
{
    uint32_t base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_STRIDE;
    int (*saved)(struct trap_frame *) = trap_hook;
    probe_faulted = 0;
    trap_hook = probe_hook;
    uint32_t magic = probe_read(base + VIRTIO_MMIO_MAGIC);
    uint32_t id = probe_faulted ? 0 : probe_read(base + VIRTIO_MMIO_DEVICE_ID);
    trap_hook = saved;
    return !probe_faulted && magic == VIRTIO_MAGIC_VALUE && id == device_id;
}

struct virtio_dev *virtio_open(uint32_t device_id, uint64_t wanted)
{
    uint32_t slot;
    for (slot = 0; slot < VIRTIO_MMIO_SLOTS; slot++)
        if (slot_has(slot, device_id))
            break;
    if (slot == VIRTIO_MMIO_SLOTS) {
        printf("virtio: no device with id %u\n", device_id);
        return 0;
    }
    if (ndevs == MAX_DEVS)
        return 0;
    struct virtio_dev *d = &devs[ndevs];
    memset(d, 0, sizeof *d);
    d->base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_STRIDE;
    d->slot = slot;
    d->device_id = device_id;
    uint32_t version = rd(d, VIRTIO_MMIO_VERSION);
    if (version != 2) {
        printf("virtio: device %u in slot %u is virtio-mmio version %u, want 2 "
               "(QEMU: -global virtio-mmio.force-legacy=false)\n", device_id, slot, version);
        return 0;
    }
    wr(d, VIRTIO_MMIO_STATUS, 0);                                   /* reset */
    while (rd(d, VIRTIO_MMIO_STATUS) != 0)
        ;
    wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wr(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t offered = rd(d, VIRTIO_MMIO_DEVICE_FEATURES);
    wr(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    offered |= (uint64_t)rd(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
    uint64_t want = wanted | (1ull << VIRTIO_F_VERSION_1);
    uint64_t accepted = offered & want;
    if (!(accepted & (1ull << VIRTIO_F_VERSION_1))) {
        printf("virtio: device %u does not offer VIRTIO_F_VERSION_1\n", device_id);
        wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_FAILED);
        return 0;
    }
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)accepted);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(accepted >> 32));
    wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        printf("virtio: device %u refused features %08x%08x\n", device_id,
               (uint32_t)(accepted >> 32), (uint32_t)accepted);
        wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_FAILED);
        return 0;
    }
    d->features = accepted;
    ndevs++;
    return d;
}

int virtio_has(const struct virtio_dev *d, uint32_t feature)
{
    return (d->features >> feature) & 1;
}

struct virtq *virtq_setup(struct virtio_dev *d, uint16_t index, uint16_t max)
{
    wr(d, VIRTIO_MMIO_QUEUE_SEL, index);
    if (rd(d, VIRTIO_MMIO_QUEUE_READY))
        return 0;
    uint32_t nmax = rd(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (nmax == 0)
        return 0;
    uint16_t size = max > VIRTQ_MAX_SIZE ? VIRTQ_MAX_SIZE : max;
    if (size > nmax)
        size = (uint16_t)nmax;
    /* one page: descriptors (16-aligned), avail ring, used ring (4-aligned), cookies, and the
     * struct itself */
    uint8_t *page = region_alloc(PAGE_SIZE);
    if (!page)
        return 0;
    memset(page, 0, PAGE_SIZE);
    uint32_t off_avail = 16u * size;
    uint32_t off_used = (off_avail + 6u + 2u * size + 3u) & ~3u;
    uint32_t off_cookies = (off_used + 6u + 8u * size + 3u) & ~3u;
    uint32_t off_q = (off_cookies + 4u * size + 7u) & ~7u;
    struct virtq *q = (struct virtq *)(page + off_q);
    q->dev = d;
    q->index = index;
    q->size = size;
    q->desc = (volatile struct virtq_desc *)page;
    q->avail = (volatile uint16_t *)(page + off_avail);
    q->used_hdr = (volatile uint16_t *)(page + off_used);
    q->used = (volatile struct virtq_used_elem *)(page + off_used + 4);
    q->cookies = (void **)(page + off_cookies);
    for (uint16_t i = 0; i < size; i++)
        q->desc[i].next = (uint16_t)(i + 1);
    q->free_head = 0;
    q->num_free = size;
    wr(d, VIRTIO_MMIO_QUEUE_NUM, size);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)q->desc);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
    wr(d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)q->avail);
    wr(d, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
    wr(d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)q->used_hdr);
    wr(d, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
    wr(d, VIRTIO_MMIO_QUEUE_READY, 1);
    return q;
}

void virtio_ready(struct virtio_dev *d)
{
    irq_register(VIRTIO_MMIO_IRQ(d->slot), virtio_irq);
    wr(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                              VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

uint32_t virtio_status(struct virtio_dev *d)
{
    return rd(d, VIRTIO_MMIO_STATUS);
}

uint32_t virtio_config32(struct virtio_dev *d, uint32_t off)
{
    uint32_t gen, v;
    do {
        gen = rd(d, VIRTIO_MMIO_CONFIG_GENERATION);
        v = rd(d, VIRTIO_MMIO_CONFIG + off);
    } while (rd(d, VIRTIO_MMIO_CONFIG_GENERATION) != gen);
    return v;
}

void virtio_config_write32(struct virtio_dev *d, uint32_t off, uint32_t v)
{
    wr(d, VIRTIO_MMIO_CONFIG + off, v);
}

uint32_t virtio_take_irq(struct virtio_dev *d)
{
    irq_disable();
    uint32_t s = d->irq_status;
    d->irq_status = 0;
    irq_enable();
    return s;
}

int virtq_add(struct virtq *q, const struct virtq_seg *segs, int n, void *cookie)
{
    if (n <= 0 || n > q->num_free)
        return -1;
    uint16_t head = q->free_head, i = head, last = head;
    for (int k = 0; k < n; k++) {
        volatile struct virtq_desc *dsc = &q->desc[i];
        dsc->addr = (uint32_t)segs[k].addr;
        dsc->len = segs[k].len;
        dsc->flags = (uint16_t)((segs[k].write ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        last = i;
        i = dsc->next;
    }
    (void)last;
    q->free_head = i;
    q->num_free = (uint16_t)(q->num_free - n);
    q->cookies[head] = cookie;
    q->avail[2 + q->avail_idx % q->size] = head;
    __asm__ volatile("fence rw, rw" : : : "memory");     /* ring entry before the index */
    q->avail_idx++;
    q->avail[1] = q->avail_idx;
    return head;
}

void virtq_kick(struct virtq *q)
{
    mb_io();                                              /* index before the notification */
    wr(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

int virtq_get(struct virtq *q, void **cookie, uint32_t *len)
{
    if (q->last_used == q->used_hdr[1])
        return 0;
    __asm__ volatile("fence rw, rw" : : : "memory");     /* index before the element */
    volatile struct virtq_used_elem *e = &q->used[q->last_used % q->size];
    uint32_t id = e->id, n = e->len;
    q->last_used++;
    if (id >= q->size)                                    /* a broken device: ignore the entry */
        return 0;
    *cookie = q->cookies[id];
    *len = n;
    /* give the chain back to the free list */
    uint16_t i = (uint16_t)id, count = 1;
    while ((q->desc[i].flags & VIRTQ_DESC_F_NEXT) && count < q->size) {
        i = q->desc[i].next;
        count++;
    }
    q->desc[i].next = q->free_head;
    q->free_head = (uint16_t)id;
    q->num_free = (uint16_t)(q->num_free + count);
    return 1;
}

void virtio_wait(struct virtio_dev *d, uint64_t deadline)
{
    if (idle_poll) {
        while (!d->irq_status && time_now() < deadline)
            ;
        return;
    }
    irq_disable();
    if (!d->irq_status && time_now() < deadline) {
        timer_arm(deadline);
        wfi();
    }
    irq_enable();           /* a pending interrupt is taken here */
    timer_disarm();
}
