/* http: an HTTP/1.1 server on a vsock port, for curl and wrk. `/` is a static page, `/count`
 * a counter that goes up by one per request; anything else is 404. Keep-alive by default
 * (HTTP/1.1) unless the request says `Connection: close`; HTTP/1.0 closes unless it asks for
 * keep-alive. Request bodies (Content-Length) are read and ignored. */
#include "runtime.h"

static const char *const known[] = { SERVICE_ARGS, 0 };

#define INBUF 8192u                  /* the request head must fit */

static const char page[] =
    "<!doctype html>\n<html><head><title>tern</title></head>\n"
    "<body><h1>Hello from a tern guest</h1>\n"
    "<p>This page is served by an RV32 guest over virtio-vsock.</p></body></html>\n";

static uint8_t *inbufs;
static uint32_t *inlen, *skip;       /* bytes buffered; body bytes still to discard */
static struct service svc;
static uint32_t nconns;
static uint64_t counter;
static char out[1024];
static uint32_t outlen;

static void put(const char *s, uint32_t n)
{
    if (outlen + n <= sizeof out) {
        memcpy(out + outlen, s, n);
        outlen += n;
    }
}
static void puts_(const char *s) { put(s, strlen(s)); }
static void putnum(uint64_t v)
{
    char b[20];
    int i = sizeof b;
    do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    put(b + i, sizeof b - i);
}

static int lower_eq_n(const uint8_t *a, const char *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c = a[i] >= 'A' && a[i] <= 'Z' ? a[i] + 32 : a[i];
        if (c != (uint8_t)b[i])
            return 0;
    }
    return 1;
}

/* Does the header value (trimmed) contain `token`, case-insensitively? */
static int has_token(const uint8_t *v, uint32_t n, const char *token)
{
    uint32_t t = strlen(token);
    for (uint32_t i = 0; i + t <= n; i++)
        if (lower_eq_n(v + i, token, t))
            return 1;
    return 0;
}

static void respond(uint32_t status, const char *reason, const char *type, const char *body, uint32_t blen,
                    int head_only, int keep)
{
    outlen = 0;
    puts_("HTTP/1.1 ");
    putnum(status);
    puts_(" ");
    puts_(reason);
    puts_("\r\nServer: tern-http\r\nContent-Type: ");
    puts_(type);
    puts_("\r\nContent-Length: ");
    putnum(blen);
    puts_(keep ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
    if (!head_only)
        put(body, blen);
}

/* Handles one request head of `n` bytes (up to and including the blank line); returns 1 to
 * keep the connection. */
static int handle(int c, const uint8_t *p, uint32_t n)
{
    uint32_t i = 0;
    while (i < n && p[i] != ' ') i++;
    uint32_t mlen = i;
    uint32_t ps = ++i;
    while (i < n && p[i] != ' ' && p[i] != '\r') i++;
    uint32_t plen = i - ps;
    const uint8_t *path = p + ps;
    int http10 = i + 9 <= n && memcmp(p + i, " HTTP/1.0", 9) == 0;
    int keep = !http10, bad = i >= n || p[i] != ' ' || mlen == 0 || plen == 0;
    uint64_t clen = 0;
    /* headers */
    while (i < n && p[i] != '\n') i++;
    i++;
    while (i + 1 < n && !(p[i] == '\r' && p[i + 1] == '\n') && p[i] != '\n') {
        uint32_t hs = i;
        while (i < n && p[i] != '\n') i++;
        uint32_t he = i > hs && p[i - 1] == '\r' ? i - 1 : i;
        i++;
        uint32_t colon = hs;
        while (colon < he && p[colon] != ':') colon++;
        if (colon == he) { bad = 1; continue; }
        const uint8_t *v = p + colon + 1;
        uint32_t vlen = he - colon - 1;
        if (colon - hs == 10 && lower_eq_n(p + hs, "connection", 10)) {
            if (has_token(v, vlen, "close")) keep = 0;
            else if (has_token(v, vlen, "keep-alive")) keep = 1;
        } else if (colon - hs == 14 && lower_eq_n(p + hs, "content-length", 14)) {
            clen = 0;
            for (uint32_t k = 0; k < vlen; k++) {
                if (v[k] == ' ') continue;
                if (v[k] < '0' || v[k] > '9' || clen > 100000000u) { bad = 1; break; }
                clen = clen * 10 + (v[k] - '0');
            }
        }
    }
    skip[c] = (uint32_t)clen;
    int head_only = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
    int get = (mlen == 3 && memcmp(p, "GET", 3) == 0) || head_only;
    if (bad) {
        respond(400, "Bad Request", "text/plain", "bad request\n", 12, 0, 0);
        keep = 0;
    } else if (!get) {
        respond(405, "Method Not Allowed", "text/plain", "method not allowed\n", 19, 0, keep);
    } else if (plen == 1 && path[0] == '/') {
        respond(200, "OK", "text/html", page, sizeof page - 1, head_only, keep);
    } else if (plen == 6 && memcmp(path, "/count", 6) == 0) {
        char body[32];
        uint64_t v = ++counter;
        int k = sizeof body;
        body[--k] = '\n';
        do { body[--k] = (char)('0' + v % 10); v /= 10; } while (v);
        respond(200, "OK", "text/plain", body + k, sizeof body - k, head_only, keep);
    } else {
        respond(404, "Not Found", "text/plain", "not found\n", 10, head_only, keep);
    }
    vsock_send(c, out, outlen);
    return keep;
}

static void close_conn(int c)
{
    service_close(&svc, c);
}

static void service(int c)
{
    uint8_t *in = inbufs + (size_t)c * INBUF;
    for (;;) {
        if (inlen[c] < INBUF) {
            int r = vsock_recv(c, in + inlen[c], INBUF - inlen[c]);
            if (r > 0) inlen[c] += (uint32_t)r;
        }
        uint32_t off = 0;
        for (;;) {
            if (skip[c]) {                           /* a request body: discarded */
                uint32_t n = inlen[c] - off < skip[c] ? inlen[c] - off : skip[c];
                off += n;
                skip[c] -= n;
                if (skip[c])
                    break;
            }
            if (vsock_writable(c) < sizeof out)
                break;                               /* the client reads slowly: wait */
            uint32_t e = off;
            while (e + 3 < inlen[c] && !(in[e] == '\r' && in[e + 1] == '\n' && in[e + 2] == '\r' && in[e + 3] == '\n'))
                e++;
            if (e + 3 >= inlen[c])
                break;
            if (!handle(c, in + off, e + 4 - off)) {
                close_conn(c);
                return;
            }
            off = e + 4;
        }
        if (off) {
            memmove(in, in + off, inlen[c] - off);
            inlen[c] -= off;
        }
        if (inlen[c] == INBUF) {                     /* a head that does not fit */
            static const char msg[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            vsock_send(c, msg, sizeof msg - 1);
            close_conn(c);
            return;
        }
        if (vsock_eof(c) && !vsock_readable(c)) {
            close_conn(c);
            return;
        }
        if (!vsock_readable(c) || vsock_writable(c) < sizeof out)
            return;
    }
}

static void on_open(int c)
{
    inlen[c] = 0;
    skip[c] = 0;
}

int main(void)
{
    args_allow(known);
    service_start(&svc, "http", 80);
    nconns = svc.nconns;
    inbufs = region_alloc(nconns * INBUF);
    inlen = region_alloc(nconns * sizeof *inlen);
    skip = region_alloc(nconns * sizeof *skip);
    if (!inbufs || !inlen || !skip) {
        printf("http: %u connections do not fit in memory\n", nconns);
        return EXIT_BAD_ARGS;
    }
    service_run(&svc, on_open, service);
}
