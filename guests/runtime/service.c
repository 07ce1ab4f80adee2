/* The common skeleton of a vsock server app: port=, conns= and buf= boot arguments, the
 * device, the listener, and a loop that accepts and serves connections. */
#include "runtime.h"

void service_start(struct service *s, const char *name, uint32_t default_port)
{
    uint64_t port = arg_uint("port", default_port);
    uint64_t conns = arg_uint("conns", 128);
    uint64_t buf = arg_size("buf", 32768);
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

void service_run(struct service *s, void (*on_open)(int conn), void (*serve)(int conn))
{
    for (;;) {
        vsock_poll(TIMEBASE_HZ);
        service_accept(s, on_open);
        for (uint32_t i = 0; i < s->nconns; i++)
            if (s->open[i])
                serve((int)i);
        vsock_flush();
    }
}
