/* Cooperative tasks: a fixed table, round-robin steps, and sleep (wfi) when every task waits.
 * The table (names, flags, memory ranges, stunned flags) lives in guest RAM, so a stunned task
 * stays stunned across a migration until the host there resumes it (docs/assist.md). */
#include "runtime.h"

static struct task table[TASK_MAX];
static uint32_t ntasks;
static void (*idle_fn)(void);
int assist_on;

/* Longest sleep between looks at the tasks and the channel. */
#define MAX_SLEEP (TIMEBASE_HZ / 10)

struct task *task_spawn(const char *name, task_step_fn step, void *arg, uint32_t flags)
{
    if (ntasks == TASK_MAX)
        return 0;
    struct task *t = &table[ntasks];
    memset(t, 0, sizeof *t);
    t->id = ++ntasks;                   /* ids from 1 */
    t->flags = flags & TASK_EXEMPT;
    size_t n = strlen(name);
    if (n >= TASK_NAME_BYTES)
        n = TASK_NAME_BYTES - 1;
    memcpy(t->name, name, n);
    t->step = step;
    t->arg = arg;
    return t;
}

void *task_alloc(struct task *t, size_t bytes)
{
    if (t->nranges == TASK_RANGES || bytes == 0)
        return 0;
    uint32_t pages = (uint32_t)((bytes + PAGE_SIZE - 1) / PAGE_SIZE);
    void *p = region_alloc((size_t)pages * PAGE_SIZE);
    if (!p)
        return 0;
    memset(p, 0, (size_t)pages * PAGE_SIZE);
    t->ranges[t->nranges].addr = (uint32_t)p;
    t->ranges[t->nranges].pages = pages;
    t->nranges++;
    return p;
}

uint32_t task_count(void) { return ntasks; }

struct task *task_get(uint32_t id)
{
    return id >= 1 && id <= ntasks ? &table[id - 1] : 0;
}

int task_stun(uint32_t id)
{
    struct task *t = task_get(id);
    if (!t) return ASSIST_UNKNOWN;
    if (t->flags & TASK_EXEMPT) return ASSIST_EXEMPT;
    if (t->stunned) return ASSIST_ALREADY;
    t->stunned = 1;
    t->stuns++;
    return ASSIST_DONE;
}

int task_resume(uint32_t id)
{
    struct task *t = task_get(id);
    if (!t) return ASSIST_UNKNOWN;
    if (!t->stunned) return ASSIST_ALREADY;
    t->stunned = 0;
    t->resumes++;
    t->wake = 0;                        /* runs at once; its pacing must not burst (the app's job) */
    return ASSIST_DONE;
}

void tasks_on_idle(void (*fn)(void)) { idle_fn = fn; }

void tasks_run(void)
{
    for (;;) {
        uint64_t now = time_now(), next = now + MAX_SLEEP;
        for (uint32_t i = 0; i < ntasks; i++) {
            struct task *t = &table[i];
            if (t->stunned)
                continue;
            if (t->wake <= now) {
                t->wake = t->step(t, t->arg);
                now = time_now();
            }
            if (t->wake < next)
                next = t->wake;
        }
        if (assist_on)
            assist_poll();
        if (idle_fn)
            idle_fn();
        now = time_now();
        if (next <= now)
            continue;
        if (assist_on)
            vsock_poll(next - now);     /* a packet from the host wakes it early */
        else
            sleep_until(next);
    }
}
