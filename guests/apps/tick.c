/* tick: a game-server-like service (Clark's Quake 3 case) on a vsock port. Every 50 ms of
 * guest time (20 Hz) it pushes `tick <seq> <guest-ms>\n` to every connected client; a client
 * measures the longest gap between lines. Input from clients is read and ignored. A client
 * too slow to take an update misses it (the line is not queued half-way). */
#include "runtime.h"

static const char *const known[] = { SERVICE_ARGS, "hz", 0 };

static struct service svc;

int main(void)
{
    args_allow(known);
    uint64_t hz = arg_uint("hz", 20);
    if (hz < 1 || hz > 1000)
        arg_fail("hz", arg_str("hz", ""), "want 1 to 1000");
    service_start(&svc, "tick", 7777);
    printf("tick: %u updates per second\n", (uint32_t)hz);
    service_ready(&svc);
    uint64_t period = TIMEBASE_HZ / hz, next = time_now() + period;
    uint32_t seq = 0;
    char line[48], junk[512];
    for (;;) {
        uint64_t now = time_now();
        vsock_poll(next > now ? next - now : 0);
        service_tend(&svc);
        service_accept(&svc, 0);
        for (uint32_t i = 0; i < vsock_conn_limit(); i++) {
            if (!svc.open[i])
                continue;
            while (vsock_recv((int)i, junk, sizeof junk) > 0)
                ;
            if (vsock_eof((int)i))
                service_close(&svc, (int)i);
        }
        now = time_now();
        if (now < next) {
            vsock_flush();
            continue;
        }
        /* one update per period; after a pause (migration) no burst of missed ones */
        seq++;
        next += period;
        if (next <= now)
            next = now + period;
        uint64_t ms = now / (TIMEBASE_HZ / 1000);
        char num[24];
        int k = sizeof num;
        uint32_t n = 0;
        memcpy(line, "tick ", 5);
        n = 5;
        uint64_t v = seq;
        do { num[--k] = (char)('0' + v % 10); v /= 10; } while (v);
        memcpy(line + n, num + k, sizeof num - k);
        n += sizeof num - k;
        line[n++] = ' ';
        k = sizeof num;
        v = ms;
        do { num[--k] = (char)('0' + v % 10); v /= 10; } while (v);
        memcpy(line + n, num + k, sizeof num - k);
        n += sizeof num - k;
        line[n++] = '\n';
        for (uint32_t i = 0; i < vsock_conn_limit(); i++)
            if (svc.open[i] && vsock_writable((int)i) >= n)
                vsock_send((int)i, line, n);
        vsock_flush();
    }
}
