/* The guest's end of the migration-assist channel (docs/assist.md): on vsock port ASSIST_PORT
 * the host connects, the guest sends its task table, the host may send STUN and RESUME, the
 * guest answers each with DONE (what it did per task), and the host closes. One connection at
 * a time; a malformed message closes it. */
#include "runtime.h"

#define ASSIST_VERSION   1u
#define T_TABLE          1u
#define T_STUN           2u
#define T_RESUME         3u
#define T_DONE           4u
#define HDR              4u
#define MAX_IDS          TASK_MAX
#define RX_BYTES         (HDR + 2 + 2 * 255)

static int listener = -1, conn = -1;
static uint8_t rx[RX_BYTES];
static uint32_t rx_len;

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v); put16(p + 2, v >> 16); }

static void hang_up(const char *why)
{
    if (why)
        printf("assist: %s; closing the channel\n", why);
    vsock_close(conn);
    conn = -1;
    rx_len = 0;
}

/* Sends a whole frame; a fresh connection's ring (4 KiB) holds the largest one. */
static void send_frame(uint8_t *f, uint32_t type, uint32_t len)
{
    f[0] = (uint8_t)type;
    f[1] = ASSIST_VERSION;
    put16(f + 2, len);
    if (vsock_writable(conn) < HDR + len || vsock_send(conn, f, HDR + len) != (int)(HDR + len))
        hang_up("no room for an answer");
}

static void send_table(void)
{
    static uint8_t f[HDR + 2 + TASK_MAX * (20 + 8 * TASK_RANGES)];
    uint8_t *p = f + HDR + 2;
    uint32_t n = task_count();
    f[HDR] = (uint8_t)n;
    f[HDR + 1] = 0;
    for (uint32_t id = 1; id <= n; id++) {
        const struct task *t = task_get(id);
        put16(p, t->id);
        p[2] = (uint8_t)((t->flags & TASK_EXEMPT ? 1 : 0) | (t->stunned ? 2 : 0));
        p[3] = (uint8_t)t->nranges;
        memset(p + 4, 0, TASK_NAME_BYTES);
        memcpy(p + 4, t->name, strlen(t->name));
        p += 4 + TASK_NAME_BYTES;
        for (uint32_t r = 0; r < t->nranges; r++, p += 8) {
            put32(p, t->ranges[r].addr);
            put32(p + 4, t->ranges[r].pages);
        }
    }
    send_frame(f, T_TABLE, (uint32_t)(p - f - HDR));
}

/* STUN or RESUME: ids (RESUME with none: every stunned task); DONE lists the result per task. */
static void command(uint32_t type, const uint8_t *p, uint32_t len)
{
    static uint8_t f[HDR + 2 + 4 * 255];
    if (len < 2 || len != 2 + 2u * p[0] || p[1] != 0) {
        hang_up("malformed STUN/RESUME");
        return;
    }
    uint32_t n = p[0], out = 0;
    uint8_t *o = f + HDR + 2;
    if (type == T_RESUME && n == 0) {
        for (uint32_t id = 1; id <= task_count(); id++) {
            if (!task_get(id)->stunned)
                continue;
            put16(o, id);
            o[2] = (uint8_t)task_resume(id);
            o[3] = 0;
            o += 4;
            out++;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = p[2 + 2 * i] | (uint32_t)p[3 + 2 * i] << 8;
        put16(o, id);
        o[2] = (uint8_t)(type == T_STUN ? task_stun(id) : task_resume(id));
        o[3] = 0;
        o += 4;
        out++;
    }
    f[HDR] = (uint8_t)type;
    f[HDR + 1] = (uint8_t)out;
    send_frame(f, T_DONE, 2 + 4 * out);
}

int assist_start(void)
{
    listener = vsock_listen(ASSIST_PORT);
    if (listener < 0)
        return -1;
    assist_on = 1;
    return 0;
}

void assist_poll(void)
{
    if (listener < 0)
        return;
    vsock_poll(0);
    int c;
    while ((c = vsock_accept(listener)) >= 0) {
        if (conn >= 0) {                /* one at a time: the newer one is turned away */
            vsock_close(c);
            continue;
        }
        conn = c;
        rx_len = 0;
        send_table();
    }
    while (conn >= 0) {
        int got = vsock_recv(conn, rx + rx_len, RX_BYTES - rx_len);
        if (got < 0) {                  /* the host is done */
            hang_up(0);
            break;
        }
        if (got == 0)
            break;
        rx_len += (uint32_t)got;
        while (conn >= 0 && rx_len >= HDR) {
            uint32_t type = rx[0], len = rx[2] | (uint32_t)rx[3] << 8;
            if (rx[1] != ASSIST_VERSION || (type != T_STUN && type != T_RESUME) || HDR + len > RX_BYTES) {
                hang_up("unknown message or version");
                break;
            }
            if (rx_len < HDR + len)
                break;
            command(type, rx + HDR, len);
            if (conn < 0)
                break;
            memmove(rx, rx + HDR + len, rx_len - HDR - len);
            rx_len -= HDR + len;
        }
    }
    vsock_flush();
}
