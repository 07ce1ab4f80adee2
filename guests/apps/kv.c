/* kv: an in-memory key-value server speaking enough RESP (the Redis protocol) for redis-cli
 * and redis-benchmark, on a vsock port. Requests are RESP arrays of bulk strings (or inline
 * commands); pipelined requests are answered in order. Keys live in an open-addressing hash
 * table of heap records; expiry (EX/PX) is checked against guest time when a key is read. */
#include "runtime.h"

static const char *const known[] = { SERVICE_ARGS, 0 };

#define INBUF 16384u                 /* one request must fit */
#define MAX_ARGS 256u

struct rec {                         /* key and value bytes follow */
    uint32_t klen, vlen, hash;
    uint64_t expire_ms;              /* 0: never */
};
#define TOMB ((struct rec *)1)
#define INT64_MAX_ 9223372036854775807ll
#define INT64_MIN_ (-INT64_MAX_ - 1)

static struct rec **table;
static uint32_t table_size, used_slots, live_keys;
static uint64_t commands, connections;

static uint8_t *inbufs;
static uint32_t *inlen;
static struct service svc;
static uint32_t nconns;
static char out[INBUF * 2];
static uint32_t outlen, outmax;
static int overflow;

static uint64_t now_ms(void) { return time_now() / (TIMEBASE_HZ / 1000); }

static uint32_t hash_bytes(const uint8_t *p, uint32_t n)
{
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint8_t *rec_key(struct rec *r) { return (uint8_t *)(r + 1); }
static uint8_t *rec_val(struct rec *r) { return (uint8_t *)(r + 1) + r->klen; }

static int table_grow(void)
{
    /* mostly tombstones (many DELs): rehash at the same size instead of doubling */
    uint32_t nsize = !table_size ? 1024 : live_keys * 4 < table_size ? table_size : table_size * 2;
    struct rec **nt = mem_alloc(nsize * sizeof *nt);
    if (!nt)
        return -1;
    memset(nt, 0, nsize * sizeof *nt);
    for (uint32_t i = 0; i < table_size; i++) {
        struct rec *r = table[i];
        if (!r || r == TOMB)
            continue;
        uint32_t j = r->hash & (nsize - 1);
        while (nt[j])
            j = (j + 1) & (nsize - 1);
        nt[j] = r;
    }
    mem_free(table);
    table = nt;
    table_size = nsize;
    used_slots = live_keys;
    return 0;
}

/* Slot of the key, or -1; expired keys are deleted on the way. */
static int32_t lookup(const uint8_t *k, uint32_t n)
{
    if (!table_size)
        return -1;
    uint32_t h = hash_bytes(k, n);
    for (uint32_t i = h & (table_size - 1), probes = 0; table[i] && probes < table_size; i = (i + 1) & (table_size - 1), probes++) {
        struct rec *r = table[i];
        if (r == TOMB || r->hash != h || r->klen != n || memcmp(rec_key(r), k, n) != 0)
            continue;
        if (r->expire_ms && now_ms() >= r->expire_ms) {
            mem_free(r);
            table[i] = TOMB;
            live_keys--;
            return -1;
        }
        return (int32_t)i;
    }
    return -1;
}

static void del_slot(int32_t i)
{
    mem_free(table[i]);
    table[i] = TOMB;
    live_keys--;
}

/* Stores key = value (replacing any old value); -1 if out of memory. */
static int store(const uint8_t *k, uint32_t kn, const uint8_t *v, uint32_t vn, uint64_t expire_ms)
{
    int32_t old = lookup(k, kn);
    struct rec *r = mem_alloc(sizeof *r + kn + vn);
    if (!r)
        return -1;
    r->klen = kn;
    r->vlen = vn;
    r->hash = hash_bytes(k, kn);
    r->expire_ms = expire_ms;
    memcpy(rec_key(r), k, kn);
    memcpy(rec_val(r), v, vn);
    if (old >= 0) {
        mem_free(table[old]);
        table[old] = r;
        return 0;
    }
    if ((used_slots + 1) * 10 >= table_size * 7 && table_grow() < 0) {
        mem_free(r);
        return -1;
    }
    uint32_t i = r->hash & (table_size - 1);
    while (table[i] && table[i] != TOMB)
        i = (i + 1) & (table_size - 1);
    if (!table[i])
        used_slots++;
    table[i] = r;
    live_keys++;
    return 0;
}

/* ---- replies ---- */
static void emit(const void *p, uint32_t n)
{
    if (overflow || outlen + n > outmax) {
        overflow = 1;
        return;
    }
    memcpy(out + outlen, p, n);
    outlen += n;
}
static void emits(const char *s) { emit(s, strlen(s)); }
static void emit_num(char prefix, int64_t v)
{
    char b[24];
    int i = sizeof b;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    b[--i] = '\n'; b[--i] = '\r';
    do { b[--i] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) b[--i] = '-';
    b[--i] = prefix;
    emit(b + i, sizeof b - i);
}
static void emit_bulk(const uint8_t *p, uint32_t n)
{
    emit_num('$', n);
    emit(p, n);
    emit("\r\n", 2);
}
static void emit_null(void) { emits("$-1\r\n"); }

/* ---- commands ---- */
static const uint8_t *av[MAX_ARGS];
static uint32_t al[MAX_ARGS], ac;

static int arg_is(uint32_t i, const char *name)
{
    uint32_t n = strlen(name);
    if (al[i] != n)
        return 0;
    for (uint32_t k = 0; k < n; k++)
        if ((av[i][k] | 32) != (name[k] | 32))
            return 0;
    return 1;
}

static int parse_i64(const uint8_t *p, uint32_t n, int64_t *out_v)
{
    if (n == 0 || n > 20)
        return -1;
    int neg = p[0] == '-';
    uint64_t v = 0;
    for (uint32_t i = neg; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > 922337203685477580ull)
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    if (n == (uint32_t)neg || v > 9223372036854775807ull)
        return -1;
    *out_v = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static void wrong_args(void)
{
    emits("-ERR wrong number of arguments for '");
    emit(av[0], al[0] > 32 ? 32 : al[0]);
    emits("' command\r\n");
}

static void cmd_incrby(int64_t by)
{
    int32_t s = lookup(av[1], al[1]);
    int64_t v = 0;
    uint64_t exp = 0;
    if (s >= 0) {
        if (parse_i64(rec_val(table[s]), table[s]->vlen, &v) < 0) {
            emits("-ERR value is not an integer or out of range\r\n");
            return;
        }
        exp = table[s]->expire_ms;
    }
    if ((by > 0 && v > INT64_MAX_ - by) || (by < 0 && v < INT64_MIN_ - by)) {
        emits("-ERR increment or decrement would overflow\r\n");
        return;
    }
    v += by;
    char b[24];
    int i = sizeof b;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    do { b[--i] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) b[--i] = '-';
    if (store(av[1], al[1], (const uint8_t *)b + i, sizeof b - i, exp) < 0) {
        emits("-OOM command not allowed when used memory > 'maxmemory'\r\n");
        return;
    }
    emit_num(':', v);
}

static uint32_t info_str(char *d, const char *s)
{
    uint32_t n = strlen(s);
    memcpy(d, s, n);
    return n;
}

static uint32_t info_num(char *d, uint64_t v)
{
    char b[20];
    int i = sizeof b;
    do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    memcpy(d, b + i, sizeof b - i);
    return sizeof b - i;
}

/* Returns 1 if the connection should close after the reply. */
static int execute(void)
{
    commands++;
    if (ac == 0)
        return 0;
    if (arg_is(0, "PING")) {
        if (ac == 1) emits("+PONG\r\n");
        else if (ac == 2) emit_bulk(av[1], al[1]);
        else wrong_args();
    } else if (arg_is(0, "ECHO")) {
        if (ac != 2) wrong_args(); else emit_bulk(av[1], al[1]);
    } else if (arg_is(0, "GET")) {
        if (ac != 2) { wrong_args(); return 0; }
        int32_t s = lookup(av[1], al[1]);
        if (s < 0) emit_null(); else emit_bulk(rec_val(table[s]), table[s]->vlen);
    } else if (arg_is(0, "SET")) {
        if (ac < 3) { wrong_args(); return 0; }
        uint64_t exp = 0;
        int nx = 0, xx = 0;
        for (uint32_t i = 3; i < ac; i++) {
            int64_t t;
            if ((arg_is(i, "EX") || arg_is(i, "PX")) && i + 1 < ac) {
                if (parse_i64(av[i + 1], al[i + 1], &t) < 0 || t <= 0) {
                    emits("-ERR invalid expire time in 'set' command\r\n");
                    return 0;
                }
                exp = now_ms() + (uint64_t)t * (arg_is(i, "EX") ? 1000 : 1);
                i++;
            } else if (arg_is(i, "NX")) nx = 1;
            else if (arg_is(i, "XX")) xx = 1;
            else { emits("-ERR syntax error\r\n"); return 0; }
        }
        int exists = lookup(av[1], al[1]) >= 0;
        if ((nx && exists) || (xx && !exists)) { emit_null(); return 0; }
        if (store(av[1], al[1], av[2], al[2], exp) < 0)
            emits("-OOM command not allowed when used memory > 'maxmemory'\r\n");
        else
            emits("+OK\r\n");
    } else if (arg_is(0, "DEL") || arg_is(0, "UNLINK")) {
        if (ac < 2) { wrong_args(); return 0; }
        int64_t n = 0;
        for (uint32_t i = 1; i < ac; i++) {
            int32_t s = lookup(av[i], al[i]);
            if (s >= 0) { del_slot(s); n++; }
        }
        emit_num(':', n);
    } else if (arg_is(0, "EXISTS")) {
        if (ac < 2) { wrong_args(); return 0; }
        int64_t n = 0;
        for (uint32_t i = 1; i < ac; i++)
            n += lookup(av[i], al[i]) >= 0;
        emit_num(':', n);
    } else if (arg_is(0, "INCR") || arg_is(0, "DECR")) {
        if (ac != 2) { wrong_args(); return 0; }
        cmd_incrby(arg_is(0, "INCR") ? 1 : -1);
    } else if (arg_is(0, "INCRBY") || arg_is(0, "DECRBY")) {
        int64_t by;
        if (ac != 3) { wrong_args(); return 0; }
        if (parse_i64(av[2], al[2], &by) < 0 || by == INT64_MIN_) {
            emits("-ERR value is not an integer or out of range\r\n");
            return 0;
        }
        cmd_incrby(arg_is(0, "INCRBY") ? by : -by);
    } else if (arg_is(0, "MGET")) {
        if (ac < 2) { wrong_args(); return 0; }
        emit_num('*', ac - 1);
        for (uint32_t i = 1; i < ac; i++) {
            int32_t s = lookup(av[i], al[i]);
            if (s < 0) emit_null(); else emit_bulk(rec_val(table[s]), table[s]->vlen);
        }
    } else if (arg_is(0, "MSET")) {
        if (ac < 3 || ac % 2 == 0) { wrong_args(); return 0; }
        for (uint32_t i = 1; i + 1 < ac; i += 2)
            if (store(av[i], al[i], av[i + 1], al[i + 1], 0) < 0) {
                emits("-OOM command not allowed when used memory > 'maxmemory'\r\n");
                return 0;
            }
        emits("+OK\r\n");
    } else if (arg_is(0, "DBSIZE")) {
        int64_t n = 0;
        uint64_t t = now_ms();
        for (uint32_t i = 0; i < table_size; i++)
            if (table[i] && table[i] != TOMB && (!table[i]->expire_ms || t < table[i]->expire_ms))
                n++;
        emit_num(':', n);
    } else if (arg_is(0, "FLUSHALL") || arg_is(0, "FLUSHDB")) {
        for (uint32_t i = 0; i < table_size; i++) {
            if (table[i] && table[i] != TOMB)
                mem_free(table[i]);
            table[i] = 0;
        }
        used_slots = live_keys = 0;
        emits("+OK\r\n");
    } else if (arg_is(0, "INFO")) {
        char body[320];
        uint32_t n = 0;
        n += info_str(body + n, "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\ntern_app:kv\r\nuptime_in_seconds:");
        n += info_num(body + n, now_ms() / 1000);
        n += info_str(body + n, "\r\n# Stats\r\ntotal_connections_received:");
        n += info_num(body + n, connections);
        n += info_str(body + n, "\r\ntotal_commands_processed:");
        n += info_num(body + n, commands);
        n += info_str(body + n, "\r\n# Keyspace\r\ndb0:keys=");
        n += info_num(body + n, live_keys);
        n += info_str(body + n, ",expires=0\r\n# Table\r\ntable_slots:");
        n += info_num(body + n, table_size);
        n += info_str(body + n, "\r\n");
        emit_bulk((const uint8_t *)body, n);
    } else if (arg_is(0, "CONFIG")) {
        emits("*0\r\n");            /* redis-benchmark asks for save and appendonly */
    } else if (arg_is(0, "COMMAND")) {
        emits("*0\r\n");
    } else if (arg_is(0, "SELECT") || arg_is(0, "CLIENT")) {
        emits("+OK\r\n");
    } else if (arg_is(0, "QUIT")) {
        emits("+OK\r\n");
        return 1;
    } else {
        emits("-ERR unknown command '");
        emit(av[0], al[0] > 32 ? 32 : al[0]);
        emits("'\r\n");
    }
    return 0;
}

/* Parses one request at p[0..n); returns bytes consumed, 0 if incomplete, -1 if malformed. */
static int32_t parse(const uint8_t *p, uint32_t n)
{
    ac = 0;
    if (n == 0)
        return 0;
    if (p[0] != '*') {                        /* inline command: words up to \n */
        uint32_t e = 0;
        while (e < n && p[e] != '\n')
            e++;
        if (e == n)
            return 0;
        uint32_t i = 0;
        while (i < e && ac < MAX_ARGS) {
            while (i < e && (p[i] == ' ' || p[i] == '\r'))
                i++;
            uint32_t s = i;
            while (i < e && p[i] != ' ' && p[i] != '\r')
                i++;
            if (i > s) { av[ac] = p + s; al[ac] = i - s; ac++; }
        }
        return (int32_t)(e + 1);
    }
    uint32_t i = 1;
    int64_t count = 0;
    /* *<count>\r\n */
    uint32_t s = i;
    while (i < n && p[i] != '\r')
        i++;
    if (i + 1 >= n)
        return 0;
    if (p[i + 1] != '\n' || parse_i64(p + s, i - s, &count) < 0 || count < 0 || count > MAX_ARGS)
        return -1;
    i += 2;
    for (int64_t k = 0; k < count; k++) {
        if (i >= n)
            return 0;
        if (p[i] != '$')
            return -1;
        s = ++i;
        while (i < n && p[i] != '\r')
            i++;
        if (i + 1 >= n)
            return 0;
        int64_t len;
        if (p[i + 1] != '\n' || parse_i64(p + s, i - s, &len) < 0 || len < 0 || len > INBUF)
            return -1;
        i += 2;
        if ((uint64_t)i + (uint64_t)len + 2 > n)
            return 0;
        if (p[i + len] != '\r' || p[i + len + 1] != '\n')
            return -1;
        av[ac] = p + i;
        al[ac] = (uint32_t)len;
        ac++;
        i += (uint32_t)len + 2;
    }
    return (int32_t)i;
}

static void close_conn(int c)
{
    service_close(&svc, c);
    inlen[c] = 0;
}

static void service(int c)
{
    uint8_t *in = inbufs + (size_t)c * INBUF;
    for (;;) {
        if (inlen[c] < INBUF) {
            int r = vsock_recv(c, in + inlen[c], INBUF - inlen[c]);
            if (r > 0)
                inlen[c] += (uint32_t)r;
        }
        uint32_t off = 0;
        int quit = 0;
        while (off < inlen[c] && !quit) {
            uint32_t room = vsock_writable(c);
            if (room < 64)
                break;                              /* the client reads slowly: wait */
            int32_t used = parse(in + off, inlen[c] - off);
            if (used < 0) {
                static const char msg[] = "-ERR Protocol error\r\n";
                vsock_send(c, msg, sizeof msg - 1);
                quit = 1;
                break;
            }
            if (used == 0)
                break;
            outlen = 0;
            overflow = 0;
            outmax = room < sizeof out ? room : sizeof out;
            quit = execute();
            if (overflow) {
                if (room < 4096)
                    break;                          /* retry when the send buffer drains */
                outlen = 0;
                overflow = 0;
                emits("-ERR reply too large\r\n");
            }
            vsock_send(c, out, outlen);
            off += (uint32_t)used;
        }
        if (off) {
            memmove(in, in + off, inlen[c] - off);
            inlen[c] -= off;
        }
        if (quit || (inlen[c] == INBUF && parse(in, inlen[c]) == 0)) {   /* request too big */
            close_conn(c);
            return;
        }
        if (vsock_eof(c) && !vsock_readable(c)) {
            close_conn(c);
            return;
        }
        if (!vsock_readable(c) || inlen[c] == INBUF || vsock_writable(c) < 64)
            return;
    }
}

static void on_open(int c)
{
    inlen[c] = 0;
    connections++;
}

int main(void)
{
    args_allow(known);
    service_start(&svc, "kv", 6379);
    nconns = svc.nconns;
    inbufs = region_alloc(nconns * INBUF);
    inlen = region_alloc(nconns * sizeof *inlen);
    if (!inbufs || !inlen) {
        printf("kv: %u connections do not fit in memory\n", nconns);
        return EXIT_BAD_ARGS;
    }
    service_run(&svc, on_open, service);
}
