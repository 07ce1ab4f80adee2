/* The guest runtime: everything an app may call. Apps define `int main(void)`;
 * its return value becomes the power-off exit code. */
#ifndef RUNTIME_H
#define RUNTIME_H

#include <stddef.h>
#include <stdarg.h>
#include "platform.h"

/* Exit codes the runtime itself uses (sifive_test fail codes). */
#define EXIT_CHECK_FAILED 1 /* an app's self-check failed */
#define EXIT_BAD_ARGS     2 /* a boot argument could not be parsed */
#define EXIT_TRAP         3 /* an unexpected exception or interrupt */

/* ---- boot information (start.S, fdt.c) ---- */
extern uint32_t boot_hartid;
extern uint32_t boot_fdt;        /* FDT address from a1; everything from here up is reserved */
extern uint32_t ram_base, ram_size;
extern const char *bootargs;     /* /chosen/bootargs, "" if none */
int fdt_parse(uint32_t fdt);     /* 0 on success */

/* ---- power (sifive_test) ---- */
__attribute__((noreturn)) void poweroff(int code);

/* ---- memory ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
void region_init(void);
void *region_alloc(size_t bytes);   /* page-aligned, never freed; NULL if it does not fit */
size_t region_free(void);           /* bytes still available */

/* ---- console (ns16550a) ---- */
void uart_init(void);
void console_putc(char c);
void console_puts(const char *s);
int console_getc(void);             /* -1 if no input is waiting */
void uart_interrupt(void);          /* drains received bytes into the input ring */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);

/* ---- time (CLINT) ---- */
uint64_t time_now(void);                /* mtime, 10 MHz ticks */
void timer_arm(uint64_t when);          /* mtimecmp = when, enable MTIE */
void timer_disarm(void);
void sleep_until(uint64_t when);        /* wfi until mtime >= when */
extern int idle_poll;                   /* boot arg idle=poll: sleep_until spins instead */
static inline uint64_t ms_to_ticks(uint64_t ms) { return ms * (TIMEBASE_HZ / 1000); }

/* ---- traps ---- */
struct trap_frame {
    uint32_t x[32];     /* x[i] = register xi at the trap; x[2] = interrupted sp, x[0] unused */
    uint32_t mepc, mstatus, mcause, mtval;
};
/* Called first for every trap; return nonzero if it handled the trap. */
extern int (*trap_hook)(struct trap_frame *f);
/* Called after the runtime handled a timer interrupt (timer already disarmed). */
extern void (*timer_hook)(void);
extern volatile uint32_t timer_interrupts, external_interrupts;
void plic_enable(uint32_t src);
/* Per-IRQ handlers for PLIC sources 1..IRQ_HANDLERS-1 (the UART's is built in); registering
 * also enables the source. The handler runs in the trap, after the claim, before the complete. */
#define IRQ_HANDLERS 32u
void irq_register(uint32_t src, void (*handler)(uint32_t src));
const char *trap_cause_name(uint32_t mcause);

/* ---- boot arguments: space-separated key=value tokens ---- */
void args_init(void);
/* Fails with EXIT_BAD_ARGS if a key is neither in the NULL-terminated list nor one the
 * runtime itself reads (idle=). */
void args_allow(const char *const *keys);
const char *arg_str(const char *key, const char *def);
uint64_t arg_uint(const char *key, uint64_t def);
uint64_t arg_size(const char *key, uint64_t def);       /* bytes; K/M/G suffixes (binary) */
uint64_t arg_duration(const char *key, uint64_t def);   /* ticks; us/ms/s suffixes, bare = ms */
/* The same syntax on a whole string (0 ok, -1 not a size/duration). */
int parse_size(const char *s, uint64_t *bytes);
int parse_duration(const char *s, uint64_t *ticks);
__attribute__((noreturn)) void arg_fail(const char *key, const char *value, const char *want);

/* ---- page allocator (pages.c): pages that can be freed ----
 * Takes all RAM region_alloc has not handed out yet (call region_alloc first, or not at all).
 * Pages are numbered from 0; ballooned pages count as in use. */
void pages_init(void);
void *page_alloc(uint32_t npages);          /* contiguous; NULL if no run fits */
void page_free(void *p, uint32_t npages);
uint32_t pages_total(void);
uint32_t pages_free(void);
uint32_t pages_ballooned(void);
void *page_addr(uint32_t page);
uint32_t page_index(const void *p);
/* for the balloon driver */
uint32_t page_take_run(uint32_t max, uint32_t *first);  /* a run of free pages, now in use */
void page_set_ballooned(uint32_t first, uint32_t n);   /* in-use pages -> balloon */
uint32_t page_next_ballooned(uint32_t from);           /* pages_total() if none */
int page_is_ballooned(uint32_t page);
void page_unballoon(uint32_t page);                    /* balloon -> free */
/* page_alloc calls this before it reuses ballooned pages in [first, first+n) */
extern void (*page_reclaim_hook)(uint32_t first, uint32_t n);

/* ---- small-object heap (heap.c), on the page allocator ---- */
void *mem_alloc(size_t bytes);              /* 8-byte aligned; NULL if out of memory */
void mem_free(void *p);                     /* NULL is fine */

/* ---- virtio-balloon (balloon.c) ---- */
#define BALLOON_HOST 1      /* follow the device's num_pages (inflate and deflate) */
#define BALLOON_SELF 2      /* also give every free page beyond a reserve, every period */
struct balloon_stats {
    uint32_t size, target;          /* pages in the balloon; the device's num_pages */
    uint32_t inflated, deflated;    /* pages moved, in total */
    uint32_t reclaims;              /* allocations that took ballooned pages back */
    uint32_t hint_cmds, hinted;     /* free page hint requests answered, pages reported */
    uint32_t last_cmd;
};
/* Finds the device and starts it; 0 on success. */
int balloon_init(int mode, uint64_t self_period_ticks, uint32_t reserve_pages);
/* Does the work: call it often from the main loop (follows num_pages, self-balloons,
 * answers free page hint requests). */
void balloon_poll(void);
int balloon_hinting(void);          /* the device and driver agreed on free page hinting */
const struct balloon_stats *balloon_get_stats(void);

/* ---- virtio-vsock stream sockets (vsock.c) ----
 * The guest listens; the host connects. Connection ids are 0..max_conns-1. Nothing blocks:
 * vsock_poll moves packets (and is the only call that sleeps). */
int vsock_init(uint32_t max_conns, uint32_t buf_bytes); /* 0 ok; buf_bytes: power of two, 4K..1M,
                                                           per direction and connection */
uint32_t vsock_guest_cid(void);
int vsock_listen(uint32_t port);            /* a listener id, or -1 */
int vsock_accept(int listener);             /* a connection id, or -1 if none is waiting */
/* Bytes read (> 0); 0 if nothing is there yet; -1 at end of stream (peer shut down or reset). */
int vsock_recv(int conn, void *buf, uint32_t n);
/* Bytes taken into the connection's send buffer (may be < n, 0 if full); -1 if the peer is
 * gone. They leave with the next vsock_poll or vsock_flush, as the peer's credit allows. */
int vsock_send(int conn, const void *buf, uint32_t n);
void vsock_flush(void);
/* Sends what is buffered, then SHUTDOWN; the id is invalid afterwards. */
int vsock_close(int conn);
/* Processes packets; if nothing happened, sleeps (wfi) until a packet arrives, a sent packet
 * completes or `timeout` ticks pass (0: never sleeps). Returns nonzero if something happened. */
int vsock_poll(uint64_t timeout);
uint32_t vsock_readable(int conn);          /* bytes waiting to be read */
uint32_t vsock_writable(int conn);          /* room in the send buffer (0 if it cannot send) */
uint32_t vsock_pending_tx(int conn);        /* bytes in the send buffer not yet sent */
int vsock_eof(int conn);                    /* no more data will arrive */
uint32_t vsock_max_conns(void);
uint32_t vsock_conn_limit(void);            /* every connection id in use is below this */
/* Nonzero (and cleared) if data arrived, data left the send buffer, or the state changed
 * since the last call: an app that went as far as it could needs to look only then. */
int vsock_take_events(int conn);
/* The next connection id >= from with events (cleared), or -1: the same without a scan. */
int vsock_next_event(int from);
struct vsock_stats {
    uint32_t rx_packets, tx_packets, dropped, accepted, refused;
    uint32_t resets_sent, resets_received, transport_resets;
    uint64_t rx_bytes, tx_bytes;
};
const struct vsock_stats *vsock_get_stats(void);

/* ---- vsock server skeleton (service.c) ----
 * service_start reads port= (default given), conns= (128), buf= (32K) and balloon=
 * (off|on|self, with balloon-period= and balloon-reserve= as munch), opens the device and
 * listens; prints "NAME: listening on vsock port P (cid C), N connections". Exits 2 on failure.
 * The app then takes its own memory with region_alloc, and service_ready starts the balloon
 * (service_run calls it). SERVICE_ARGS lists the keys for args_allow. */
#define SERVICE_ARGS "port", "conns", "buf", "balloon", "balloon-period", "balloon-reserve"
struct service {
    const char *name;
    int listener;
    uint32_t nconns;
    uint8_t *open;          /* open[conn]: accepted and not closed by the app */
    int balloon_mode, ready;
    uint64_t balloon_period, balloon_reserve;
};
void service_start(struct service *s, const char *name, uint32_t default_port);
void service_ready(struct service *s);
void service_tend(struct service *s);   /* the balloon's periodic work; call in the app's loop */
void service_accept(struct service *s, void (*on_open)(int conn));
void service_close(struct service *s, int conn);
/* Forever: poll (up to 1 s), accept (on_open may be NULL), serve every open connection that
 * has events (vsock_take_events): serve must go as far as it can each time. */
__attribute__((noreturn)) void service_run(struct service *s, void (*on_open)(int conn), void (*serve)(int conn));

/* ---- cooperative tasks (tasks.c) and the migration-assist channel (assist.c) ----
 * task_spawn adds a task; tasks_run round-robins their steps forever. A step does a bounded
 * piece of work and returns the guest time (mtime) it wants to run again (now or earlier: at
 * once). A task's memory comes from task_alloc, so the task table knows its pages. A stunned
 * task's step is not called (Clark §5.5); TASK_EXEMPT (interactive) tasks are never stunned.
 * See docs/assist.md. */
#define TASK_EXEMPT     1u          /* interactive: the host may not stun it */
#define TASK_MAX        16u
#define TASK_RANGES     8u          /* task_alloc calls per task */
#define TASK_NAME_BYTES 16u         /* including the NUL */
#define ASSIST_PORT     1235u       /* the guest listens here for the host's assist channel */
struct task;
typedef uint64_t (*task_step_fn)(struct task *t, void *arg);
struct task_range { uint32_t addr, pages; };
struct task {
    uint32_t id, flags;
    uint32_t stunned;               /* nonzero: its step is not called (set by the channel) */
    uint32_t stuns, resumes;        /* how often it was stunned / resumed */
    char name[TASK_NAME_BYTES];
    task_step_fn step;
    void *arg;
    uint64_t wake;
    uint32_t nranges;
    struct task_range ranges[TASK_RANGES];
};
struct task *task_spawn(const char *name, task_step_fn step, void *arg, uint32_t flags); /* NULL if full */
void *task_alloc(struct task *t, size_t bytes);    /* zeroed whole pages (region_alloc); NULL if none */
uint32_t task_count(void);
struct task *task_get(uint32_t id);                 /* NULL if no such task */
int task_stun(uint32_t id);                         /* ASSIST_* result */
int task_resume(uint32_t id);
/* Called by tasks_run every iteration (the app's periodic work: balloon, services). */
void tasks_on_idle(void (*fn)(void));
/* Runs the tasks forever. With the channel on (tasks_assist_start after vsock_init), idle time
 * sleeps in vsock_poll so the host's packets wake it. */
__attribute__((noreturn)) void tasks_run(void);
/* assist.c: listens on ASSIST_PORT (vsock_init first); 0 ok. tasks_run then serves it. */
int assist_start(void);
void assist_poll(void);
extern int assist_on;
#define ASSIST_DONE      0          /* results per task in a DONE message */
#define ASSIST_EXEMPT    1
#define ASSIST_UNKNOWN   2
#define ASSIST_ALREADY   3

/* ---- small helpers ---- */
static inline uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    return *s = x;
}

int main(void);

#endif
