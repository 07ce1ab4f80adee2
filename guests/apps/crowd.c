/* crowd: several tasks on the cooperative scheduler, for stunning rogue processes (Clark §5.5).
 * Three writer tasks dirty their own memory at their own rates (guest time): `rogue` (large and
 * fast), `modest`, and `ui`, an exempt interactive task that also prints a status line every
 * `report`. Each page holds its pass number, checked before every write, so a page lost or rolled
 * back by a migration prints an `X` line. With assist=on (default) the host's migration-assist
 * channel (docs/assist.md) may stun rogue and modest; ui is exempt. */
#include "runtime.h"

static const char *const known[] = {
    "rogue", "rogue-rate", "modest", "modest-rate", "ui", "ui-rate", "report", "assist", 0
};

/* Most pages one step touches, so the others (and the channel) get their turn. */
#define BATCH 256u

struct writer {
    const char *name;
    uint32_t *base;
    uint32_t pages, pos, pass;
    uint64_t rate;              /* bytes of pages dirtied per second of guest time; 0: flat out */
    uint64_t credit, last;      /* pacing: bytes allowed, accrued since `last` */
    uint64_t touches;
    int bad;
};

static struct writer writers[3];
static struct task *tasks[3];
static uint64_t report_ticks, next_report, start;

/* One page: its first word must hold the pass number; then it holds the next one. */
static void touch(struct writer *w)
{
    uint32_t *p = w->base + w->pos * (PAGE_SIZE / 4);
    if (p[0] != w->pass && !w->bad) {
        printf("X %s: page %u holds pass %u, expected %u\n", w->name, w->pos, p[0], w->pass);
        w->bad = 1;
    }
    p[0] = w->pass + 1;
    p[1 + w->pass % (PAGE_SIZE / 4 - 1)] = w->pass ^ 0x63726f77u;
    w->touches++;
    if (++w->pos == w->pages) {
        w->pos = 0;
        w->pass++;
    }
}

static void status(uint64_t now)
{
    uint64_t ms = (now - start) / (TIMEBASE_HZ / 1000);
    printf("crowd: t=%llu.%03llus", ms / 1000, ms % 1000);
    for (int i = 0; i < 3; i++)
        printf(" %s=%llu", writers[i].name, writers[i].touches);
    printf(" stunned=");
    int any = 0;
    for (int i = 0; i < 3; i++) {
        if (tasks[i]->stunned) {
            printf("%s%s", any ? "," : "", writers[i].name);
            any = 1;
        }
    }
    printf("%s\n", any ? "" : "-");
}

static uint64_t write_step(struct task *t, void *arg)
{
    struct writer *w = arg;
    uint64_t now = time_now();
    if (t->flags & TASK_EXEMPT && now >= next_report) {
        status(now);
        while (next_report <= now)
            next_report += report_ticks;
    }
    if (w->rate == 0) {
        for (uint32_t i = 0; i < BATCH; i++)
            touch(w);
        return 0;
    }
    /* credit for the time since the last step, at most 20 ms worth: no burst after a stun or pause */
    uint64_t cap = w->rate / 50 + PAGE_SIZE;
    w->credit += w->rate * (now - w->last) / TIMEBASE_HZ;
    if (w->credit > cap)
        w->credit = cap;
    w->last = now;
    for (uint32_t i = 0; i < BATCH && w->credit >= PAGE_SIZE; i++) {
        touch(w);
        w->credit -= PAGE_SIZE;
    }
    uint64_t wake = now + (PAGE_SIZE - (w->credit < PAGE_SIZE ? w->credit : 0)) * TIMEBASE_HZ / w->rate;
    if (t->flags & TASK_EXEMPT && next_report < wake)
        wake = next_report;
    return w->credit >= PAGE_SIZE ? 0 : wake;
}

static void spawn(int i, const char *name, const char *size_key, uint64_t def_size, const char *rate_key, uint64_t def_rate, uint32_t flags)
{
    uint64_t bytes = arg_size(size_key, def_size);
    uint64_t rate = arg_size(rate_key, def_rate);
    if (bytes < PAGE_SIZE || bytes > 0x7fffffffu)
        arg_fail(size_key, arg_str(size_key, ""), "want 4K to 2G");
    if (rate > 0xffffffffu)
        arg_fail(rate_key, arg_str(rate_key, ""), "want at most 4G per second");
    struct writer *w = &writers[i];
    w->name = name;
    w->rate = rate;
    w->last = time_now();
    tasks[i] = task_spawn(name, write_step, w, flags);
    w->base = task_alloc(tasks[i], (size_t)bytes);
    if (!w->base) {
        printf("crowd: %s: %llu bytes do not fit (%u bytes free)\n", name, bytes, region_free());
        poweroff(EXIT_BAD_ARGS);
    }
    w->pages = (uint32_t)((bytes + PAGE_SIZE - 1) / PAGE_SIZE);
}

int main(void)
{
    args_allow(known);
    report_ticks = arg_duration("report", TIMEBASE_HZ);
    if (report_ticks == 0)
        arg_fail("report", arg_str("report", ""), "want a positive duration");
    const char *assist = arg_str("assist", "on");
    if (strcmp(assist, "on") != 0 && strcmp(assist, "off") != 0)
        arg_fail("assist", assist, "want on or off");
    /* the device's rings first (region_alloc), then the tasks' memory */
    if (strcmp(assist, "on") == 0 && (vsock_init(2, 4096) != 0 || assist_start() != 0)) {
        printf("crowd: assist=on but no usable virtio-vsock device\n");
        return EXIT_BAD_ARGS;
    }
    spawn(0, "rogue", "rogue", 16u << 20, "rogue-rate", 32u << 20, 0);
    spawn(1, "modest", "modest", 1u << 20, "modest-rate", 256u << 10, 0);
    spawn(2, "ui", "ui", 256u << 10, "ui-rate", 1u << 20, TASK_EXEMPT);
    printf("crowd:");
    for (int i = 0; i < 3; i++)
        printf(" %s=%uB@%lluB/s%s", writers[i].name, writers[i].pages * PAGE_SIZE, writers[i].rate,
               tasks[i]->flags & TASK_EXEMPT ? "(exempt)" : "");
    if (assist_on)
        printf(" assist=vsock:%u cid=%u\n", ASSIST_PORT, vsock_guest_cid());
    else
        printf(" assist=off\n");
    start = time_now();
    next_report = start + report_ticks;
    tasks_run();
}
