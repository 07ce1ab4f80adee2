/* virtio-balloon driver (virtio 1.x §5.5): inflate/deflate following the device's num_pages,
 * dynamic self-ballooning (Hines & Gopalan: free pages go to the balloon every period, and
 * come back when an allocation needs them), and free page hinting as QEMU's protocol expects
 * (cmd id out, hints as device-writable buffers, STOP out). Pages come from pages.c. */
#include "virtio.h"

#define VIRTIO_ID_BALLOON 5u
#define F_MUST_TELL_HOST  0u
#define F_STATS_VQ        1u
#define F_DEFLATE_ON_OOM  2u
#define F_FREE_PAGE_HINT  3u

#define CFG_NUM_PAGES 0u
#define CFG_ACTUAL    4u
#define CFG_HINT_CMD  8u
#define HINT_CMD_STOP 0u
#define HINT_CMD_DONE 1u

#define PFNS_PER_BATCH (PAGE_SIZE / 4)
#define HINT_MAX_PAGES 1024u                   /* 4 MiB per hint, as Linux reports them */
#define OP_TIMEOUT     (TIMEBASE_HZ)           /* one second of guest time per batch */
#define HINT_TIMEOUT   (2 * TIMEBASE_HZ)

static struct virtio_dev *dev;
static struct virtq *inflq, *deflq, *hintq;
static uint32_t *pfns;                 /* one page of PFNs, shared by inflate and deflate */
static volatile uint32_t *cmd_words;   /* [0] the cmd id we answer, [1] STOP */
static int mode, broken;
static uint64_t period, next_self;
static uint32_t reserve;
static struct balloon_stats stats;

struct hint_run { uint32_t first, n; };
static struct hint_run *runs;          /* one per descriptor of the hint queue */

const struct balloon_stats *balloon_get_stats(void) { return &stats; }

/* Sends one buffer and waits until the device has used it. */
static int send_sync(struct virtq *q, const void *buf, uint32_t len)
{
    struct virtq_seg seg = { buf, len, 0 };
    if (virtq_add(q, &seg, 1, (void *)buf) < 0)
        return -1;
    virtq_kick(q);
    uint64_t deadline = time_now() + OP_TIMEOUT;
    for (;;) {
        virtio_take_irq(dev);
        void *cookie;
        uint32_t n;
        if (virtq_get(q, &cookie, &n))
            return 0;
        if (time_now() >= deadline) {
            printf("balloon: device did not answer on queue %u; balloon disabled\n", q->index);
            broken = 1;
            return -1;
        }
        virtio_wait(dev, deadline);
    }
}

static void set_actual(void)
{
    stats.size = pages_ballooned();
    virtio_config_write32(dev, CFG_ACTUAL, stats.size);
}

static uint32_t pfn_of(uint32_t page) { return (uint32_t)page_addr(page) >> 12; }

/* Moves up to n free pages into the balloon; returns how many. */
static uint32_t inflate(uint32_t n)
{
    uint32_t done = 0;
    while (done < n && !broken) {
        uint32_t count = 0, first, len;
        while (count < PFNS_PER_BATCH && done + count < n &&
               (len = page_take_run(PFNS_PER_BATCH - count < n - done - count ? PFNS_PER_BATCH - count : n - done - count, &first)) != 0) {
            page_set_ballooned(first, len);
            for (uint32_t i = 0; i < len; i++)
                pfns[count++] = pfn_of(first + i);
        }
        if (!count)
            break;
        if (send_sync(inflq, pfns, count * 4) < 0)
            break;
        done += count;
    }
    stats.inflated += done;
    if (done)
        set_actual();
    return done;
}

/* Tells the device the ballooned pages in [first, first+n) are taken back (pages.c clears
 * their bits after this returns). */
static void reclaim(uint32_t first, uint32_t n)
{
    uint32_t count = 0, taken = 0;
    for (uint32_t i = first; i < first + n; i++) {
        if (!page_is_ballooned(i))
            continue;
        pfns[count++] = pfn_of(i);
        taken++;
        if (count == PFNS_PER_BATCH) {
            if (!broken)
                send_sync(deflq, pfns, count * 4);
            count = 0;
        }
    }
    if (count && !broken)
        send_sync(deflq, pfns, count * 4);
    stats.deflated += taken;
    stats.reclaims++;
    virtio_config_write32(dev, CFG_ACTUAL, pages_ballooned() - taken);
    stats.size = pages_ballooned() - taken;
}

/* Gives up to n ballooned pages back to the free pool. */
static void deflate(uint32_t n)
{
    uint32_t done = 0, from = 0;
    while (done < n && !broken) {
        uint32_t count = 0, i = from;
        while (count < PFNS_PER_BATCH && done + count < n && (i = page_next_ballooned(i)) < pages_total())
            pfns[count++] = pfn_of(i++);
        if (!count)
            break;
        if (send_sync(deflq, pfns, count * 4) < 0)
            break;
        for (uint32_t k = 0; k < count; k++)
            page_unballoon(page_index((void *)(pfns[k] << 12)));
        done += count;
        from = i;
    }
    stats.deflated += done;
    if (done)
        set_actual();
}

/* Frees the pages of hint buffers the device has used; returns how many are outstanding. */
static uint32_t hint_reap(void)
{
    void *cookie;
    uint32_t n;
    while (virtq_get(hintq, &cookie, &n)) {
        struct hint_run *r = cookie;
        if (r && r->n) {
            page_free(page_addr(r->first), r->n);
            r->n = 0;
        }
    }
    return hintq->size - virtq_free(hintq);
}

static void hint_report(uint32_t cmd)
{
    stats.hint_cmds++;
    stats.last_cmd = cmd;
    cmd_words[0] = cmd;
    struct virtq_seg seg = { (const void *)cmd_words, 4, 0 };
    if (virtq_add(hintq, &seg, 1, 0) < 0)
        return;
    virtq_kick(hintq);
    uint64_t deadline = time_now() + HINT_TIMEOUT;
    int taking = 1, stop_sent = 0;
    for (;;) {
        uint32_t irq = virtio_take_irq(dev);
        uint32_t outstanding = hint_reap();
        /* QEMU reads the field as 0 once it has our cmd id, so look only on a config change */
        if (taking && (irq & VIRTIO_INT_CONFIG) && virtio_config32(dev, CFG_HINT_CMD) != cmd)
            taking = 0;                             /* the device moved on (STOP or DONE) */
        int added = 0;
        while (taking && virtq_free(hintq) > 1) {   /* keep one descriptor for STOP */
            uint32_t first, len = page_take_run(HINT_MAX_PAGES, &first);
            if (!len) {
                taking = 0;
                break;
            }
            struct hint_run *r = 0;
            for (uint32_t k = 0; k < hintq->size; k++)
                if (!runs[k].n) { r = &runs[k]; break; }
            struct virtq_seg h = { page_addr(first), len * PAGE_SIZE, 1 };
            if (!r || virtq_add(hintq, &h, 1, r) < 0) {
                page_free(page_addr(first), len);
                taking = 0;
                break;
            }
            r->first = first;
            r->n = len;
            stats.hinted += len;
            outstanding++;
            added = 1;
        }
        if (!taking && !stop_sent) {
            cmd_words[1] = HINT_CMD_STOP;
            struct virtq_seg s = { (const void *)(cmd_words + 1), 4, 0 };
            if (virtq_add(hintq, &s, 1, 0) >= 0) {
                stop_sent = 1;
                added = 1;
                outstanding++;
            }
        }
        if (added)
            virtq_kick(hintq);
        if (stop_sent && outstanding == 0)
            return;
        if (time_now() >= deadline)
            return;                                 /* the rest is freed by later polls */
        virtio_wait(dev, deadline);
    }
}

int balloon_init(int m, uint64_t self_period, uint32_t reserve_pages)
{
    uint64_t want = 1ull << F_STATS_VQ | 1ull << F_DEFLATE_ON_OOM | 1ull << F_FREE_PAGE_HINT |
                    1ull << F_MUST_TELL_HOST;
    dev = virtio_open(VIRTIO_ID_BALLOON, want);
    if (!dev)
        return -1;
    inflq = virtq_setup(dev, 0, 8);
    deflq = virtq_setup(dev, 1, 8);
    if (virtio_has(dev, F_FREE_PAGE_HINT)) {
        /* free_page_vq is queue 3 after statsq (2); a device without statsq may number it 2 */
        hintq = virtq_setup(dev, virtio_has(dev, F_STATS_VQ) ? 3 : 2, 64);
        if (!hintq && !virtio_has(dev, F_STATS_VQ))
            hintq = virtq_setup(dev, 3, 64);
    }
    pfns = region_alloc(PAGE_SIZE);
    cmd_words = region_alloc(PAGE_SIZE);
    runs = (struct hint_run *)(cmd_words + 16);
    if (!inflq || !deflq || !pfns || !cmd_words) {
        printf("balloon: cannot set up the inflate/deflate queues\n");
        return -1;
    }
    memset((void *)cmd_words, 0, PAGE_SIZE);
    pages_init();                      /* after the rings: it takes the rest of the region */
    virtio_ready(dev);
    mode = m;
    period = self_period;
    reserve = reserve_pages;
    next_self = time_now() + period;
    page_reclaim_hook = reclaim;
    stats.last_cmd = HINT_CMD_DONE;
    set_actual();
    return 0;
}

int balloon_hinting(void) { return hintq != 0; }

void balloon_poll(void)
{
    if (!dev || broken)
        return;
    virtio_take_irq(dev);
    if (hintq) {
        hint_reap();
        uint32_t cmd = virtio_config32(dev, CFG_HINT_CMD);
        if (cmd != HINT_CMD_STOP && cmd != HINT_CMD_DONE && cmd != stats.last_cmd)
            hint_report(cmd);
    }
    uint32_t target = virtio_config32(dev, CFG_NUM_PAGES);
    stats.target = target;
    uint32_t size = pages_ballooned();
    if (size < target)
        inflate(target - size);
    else if (size > target && mode == BALLOON_HOST)
        deflate(size - target);
    if (mode == BALLOON_SELF && time_now() >= next_self) {
        uint32_t f = pages_free();
        if (f > reserve)
            inflate(f - reserve);
        next_self = time_now() + period;
    }
}
