/* The common skeleton of a vsock server app: port=, conns=, buf= and balloon= boot arguments,
 * the device, the listener, and a loop that accepts and serves connections. */
#include "runtime.h"

void service_start(struct service *s, const char *name, uint32_t default_port)
{
    uint64_t port = arg_uint("port", default_port);
    uint64_t conns = arg_uint("conns", 128);
    uint64_t buf = arg_size("buf", 32768);
    const char *bal = arg_str("balloon", "off");
    if (strcmp(bal, "on") == 0) s->balloon_mode = BALLOON_HOST;
    else if (strcmp(bal, "self") == 0) s->balloon_mode = BALLOON_SELF;
    else if (strcmp(bal, "off") == 0) s->balloon_mode = 0;
    else arg_fail("balloon", bal, "want off, on or self");
    s->balloon_period = arg_duration("balloon-period", TIMEBASE_HZ);
    s->balloon_reserve = arg_size("balloon-reserve", 1u << 20);
    if (s->balloon_period == 0)
        arg_fail("balloon-period", arg_str("balloon-period", ""), "want a positive duration");
    s->ready = 0;
    if (port > 0xffffffffu)
        arg_fail("port", arg_str("port", ""), "want a 32-bit port number");
    if (conns < 1 || conns > 1024)
        arg_fail("conns", arg_str("conns", ""), "want 1 to 1024");
    if (buf < 4096 || buf > (1u << 20) || (buf & (buf - 1)))
        arg_fail("buf", arg_str("buf", ""), "want a power of two from 4K to 1M");
    if (vsock_init((uint32_t)conns, (uint32_t)buf) != 0) {
        printf("%s: no usable virtio-vsock device\n", name);
        poweroff(EXIT_BAD_ARGS);
    }
    s->name = name;
    s->nconns = (uint32_t)conns;
    s->open = region_alloc(s->nconns);
    if (!s->open) {
        printf("%s: %u connections do not fit in memory\n", name, s->nconns);
        poweroff(EXIT_BAD_ARGS);
    }
    memset(s->open, 0, s->nconns);
    s->listener = vsock_listen((uint32_t)port);
    printf("%s: listening on vsock port %u (cid %u), %u connections\n", name, (uint32_t)port,
           vsock_guest_cid(), s->nconns);
}

void service_accept(struct service *s, void (*on_open)(int conn))
{
    int c;
    while ((c = vsock_accept(s->listener)) >= 0) {
        s->open[c] = 1;
        if (on_open)
            on_open(c);
    }
}

void service_close(struct service *s, int conn)
{
    vsock_close(conn);
    s->open[conn] = 0;
}

void service_ready(struct service *s)
{
    if (s->ready)
        return;
    s->ready = 1;
    if (s->balloon_mode && balloon_init(s->balloon_mode, s->balloon_period, (uint32_t)(s->balloon_reserve / PAGE_SIZE)) != 0) {
        printf("%s: balloon=%s but no usable virtio-balloon device\n", s->name, s->balloon_mode == BALLOON_SELF ? "self" : "on");
        poweroff(EXIT_BAD_ARGS);
    }
}

void service_tend(struct service *s)
{
    if (s->balloon_mode)
        balloon_poll();
}

void service_run(struct service *s, void (*on_open)(int conn), void (*serve)(int conn))
{
    service_ready(s);
    uint64_t wait = s->balloon_mode && s->balloon_period < TIMEBASE_HZ ? s->balloon_period : TIMEBASE_HZ;
    for (;;) {
        vsock_poll(wait);
        service_tend(s);
        service_accept(s, on_open);
        for (int c = vsock_next_event(0); c >= 0; c = vsock_next_event(c + 1))
            if (s->open[c])
                serve(c);
        vsock_flush();
    }
}
