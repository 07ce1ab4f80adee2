/* Boot arguments: space-separated `key=value` tokens from /chosen/bootargs. */
#include "runtime.h"

#define MAX_ARGS 32
static char args_buf[1024];
static const char *keys[MAX_ARGS], *values[MAX_ARGS];
static int nargs;

void args_init(void)
{
    size_t n = strlen(bootargs);
    if (n >= sizeof args_buf)
        n = sizeof args_buf - 1;
    memcpy(args_buf, bootargs, n);
    args_buf[n] = 0;
    char *p = args_buf;
    while (*p && nargs < MAX_ARGS) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            *p++ = 0;
        if (!*p)
            break;
        keys[nargs] = p;
        values[nargs] = "";             /* a bare `key` has an empty value */
        int split = 0;
        for (; *p && *p != ' ' && *p != '\t' && *p != '\n'; p++) {
            if (*p == '=' && !split) {   /* the first '=' splits; later ones belong to the value */
                *p = 0;
                values[nargs] = p + 1;
                split = 1;
            }
        }
        nargs++;
    }
}

void arg_fail(const char *key, const char *value, const char *want)
{
    printf("bad boot argument %s=%s: %s\n", key, value, want);
    poweroff(EXIT_BAD_ARGS);
}

void args_allow(const char *const *allowed)
{
    for (int i = 0; i < nargs; i++) {
        if (strcmp(keys[i], "idle") == 0)     /* read by the runtime */
            continue;
        const char *const *k = allowed;
        while (*k && strcmp(*k, keys[i]) != 0)
            k++;
        if (!*k) {
            printf("unknown boot argument '%s' (known:", keys[i]);
            for (k = allowed; *k; k++)
                printf(" %s", *k);
            printf(")\n");
            poweroff(EXIT_BAD_ARGS);
        }
    }
}

const char *arg_str(const char *key, const char *def)
{
    const char *v = def;
    for (int i = 0; i < nargs; i++)     /* the last occurrence wins */
        if (strcmp(keys[i], key) == 0)
            v = values[i];
    return v;
}

/* Parses leading decimal digits (or 0x hex); *rest points past them. 0 digits -> fail. */
static int parse_number(const char *s, uint64_t *out, const char **rest)
{
    uint64_t v = 0;
    const char *p = s;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        for (p += 2; ; p++) {
            int d = *p >= '0' && *p <= '9' ? *p - '0' : (*p | 32) >= 'a' && (*p | 32) <= 'f' ? (*p | 32) - 'a' + 10 : -1;
            if (d < 0) break;
            if (v >> 60) return -1;
            v = v << 4 | (uint32_t)d;
        }
        if (p == s + 2) return -1;
    } else {
        for (; *p >= '0' && *p <= '9'; p++) {
            if (v > (UINT64_MAX - 9) / 10) return -1;
            v = v * 10 + (uint32_t)(*p - '0');
        }
        if (p == s) return -1;
    }
    *out = v;
    *rest = p;
    return 0;
}

static int lower_eq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if ((*a | 32) != *b)
            return 0;
    return *a == *b;
}

uint64_t arg_uint(const char *key, uint64_t def)
{
    const char *s = arg_str(key, 0), *rest;
    uint64_t v;
    if (!s) return def;
    if (parse_number(s, &v, &rest) || *rest)
        arg_fail(key, s, "want a number");
    return v;
}

int parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *suffix; uint32_t shift; } units[] = {
        {"", 0}, {"b", 0}, {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20}, {"mb", 20}, {"mib", 20},
        {"g", 30}, {"gb", 30}, {"gib", 30},
    };
    const char *rest;
    uint64_t v;
    if (parse_number(s, &v, &rest) == 0)
        for (unsigned i = 0; i < sizeof units / sizeof units[0]; i++)
            if (lower_eq(rest, units[i].suffix) && (v << units[i].shift >> units[i].shift) == v) {
                *out = v << units[i].shift;
                return 0;
            }
    return -1;
}

int parse_duration(const char *s, uint64_t *out)
{
    static const struct { const char *suffix; uint32_t ticks; } units[] = {
        {"", TIMEBASE_HZ / 1000}, {"us", TIMEBASE_HZ / 1000000}, {"ms", TIMEBASE_HZ / 1000}, {"s", TIMEBASE_HZ},
    };
    const char *rest;
    uint64_t v;
    if (parse_number(s, &v, &rest) == 0)
        for (unsigned i = 0; i < sizeof units / sizeof units[0]; i++)
            if (lower_eq(rest, units[i].suffix) && v <= UINT64_MAX / units[i].ticks) {
                *out = v * units[i].ticks;
                return 0;
            }
    return -1;
}

uint64_t arg_size(const char *key, uint64_t def)
{
    const char *s = arg_str(key, 0);
    uint64_t v;
    if (!s) return def;
    if (parse_size(s, &v) == 0)
        return v;
    arg_fail(key, s, "want a size like 4096, 64K, 16M, 1G");
}

uint64_t arg_duration(const char *key, uint64_t def)
{
    const char *s = arg_str(key, 0);
    uint64_t v;
    if (!s) return def;
    if (parse_duration(s, &v) == 0)
        return v;
    arg_fail(key, s, "want a duration like 500us, 20ms, 2s (a bare number is ms)");
}
