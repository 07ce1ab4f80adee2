/* compute: a deterministic CPU benchmark. Each round runs five kernels (CRC32, a segmented
 * sieve, a sort, a hash table, mul/div arithmetic) over ~0.8 MiB of buffers and folds their
 * results into a digest. The output is identical on every run and hypervisor unless
 * `timing=1` asks for a line with the elapsed guest time. */
#include "runtime.h"

#define BUF_BYTES   (256u << 10)        /* CRC input */
#define SIEVE_SPAN  (128u << 10)        /* numbers per sieve segment */
#define SORT_N      (32u << 10)         /* 128 KiB of keys */
#define HASH_SLOTS  32749u              /* prime; 256 KiB of key/value pairs */
#define HASH_KEYS   24000u

static const char *const known[] = { "iters", "timing", 0 };

static uint32_t crc_table[256];
static uint8_t *buf, *sieve;
static uint32_t *keys;
static uint32_t (*table)[2];
static uint32_t base_primes[1024], nbase;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32(uint32_t crc, const uint8_t *p, uint32_t n)
{
    crc = ~crc;
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint32_t crc_word(uint32_t crc, uint32_t w)
{
    uint8_t b[4] = { (uint8_t)w, (uint8_t)(w >> 8), (uint8_t)(w >> 16), (uint8_t)(w >> 24) };
    return crc32(crc, b, 4);
}

/* Fill a buffer with pseudo-random bytes and CRC it. */
static uint32_t kernel_crc(uint32_t round)
{
    uint32_t s = 0x9e3779b9u ^ round * 2654435761u, *w = (uint32_t *)buf;
    if (!s) s = 1;
    for (uint32_t i = 0; i < BUF_BYTES / 4; i++)
        w[i] = xorshift32(&s);
    return crc32(round, buf, BUF_BYTES);
}

/* Count and sum the primes in [lo, lo + SIEVE_SPAN): division finds each prime's first multiple. */
static uint32_t kernel_sieve(uint32_t round)
{
    uint32_t lo = 1000000u + round * SIEVE_SPAN;
    memset(sieve, 1, SIEVE_SPAN);
    for (uint32_t i = 0; i < nbase; i++) {
        uint32_t p = base_primes[i];
        if (p * p >= lo + SIEVE_SPAN)
            break;
        uint32_t first = (lo + p - 1) / p * p;
        for (uint32_t m = first - lo; m < SIEVE_SPAN; m += p)
            sieve[m] = 0;
    }
    uint32_t count = 0, sum = 0;
    for (uint32_t i = 0; i < SIEVE_SPAN; i++)
        if (sieve[i]) {
            count++;
            sum += lo + i;
        }
    return count * 0x10001u ^ sum;
}

static void insertion_sort(uint32_t *a, int32_t n)
{
    for (int32_t i = 1; i < n; i++) {
        uint32_t v = a[i];
        int32_t j = i - 1;
        for (; j >= 0 && a[j] > v; j--)
            a[j + 1] = a[j];
        a[j + 1] = v;
    }
}

static void quicksort(uint32_t *a, int32_t n)
{
    while (n > 16) {
        uint32_t x = a[0], y = a[n / 2], z = a[n - 1];
        uint32_t pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
        int32_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i >= j) break;
            uint32_t t = a[i]; a[i] = a[j]; a[j] = t;
            i++; j--;
        }
        if (j + 1 < n - j - 1) {      /* recurse into the smaller half */
            quicksort(a, j + 1);
            a += j + 1; n -= j + 1;
        } else {
            quicksort(a + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    insertion_sort(a, n);
}

static uint32_t kernel_sort(uint32_t round)
{
    uint32_t s = 0x2545f491u + round;
    for (uint32_t i = 0; i < SORT_N; i++)
        keys[i] = xorshift32(&s) % (SORT_N * 4);   /* duplicates on purpose */
    quicksort(keys, SORT_N);
    uint32_t h = 0;
    for (uint32_t i = 0; i < SORT_N; i++) {
        if (i && keys[i - 1] > keys[i])
            return 0xbad50f7u;      /* not sorted: shows up in the digest */
        h = h * 31 + keys[i];
    }
    return h;
}

/* Open addressing with linear probing; keys are never 0 (0 marks an empty slot). */
static uint32_t kernel_hash(uint32_t round)
{
    memset(table, 0, HASH_SLOTS * sizeof table[0]);
    uint32_t s = 0x1234567u ^ round << 8, inserted = 0, found = 0, acc = 0;
    for (uint32_t i = 0; i < HASH_KEYS; i++) {
        uint32_t k = (xorshift32(&s) & 0xfffffu) | 1;   /* a small key space gives repeats */
        uint32_t slot = k % HASH_SLOTS;
        while (table[slot][0] && table[slot][0] != k)
            slot = slot + 1 == HASH_SLOTS ? 0 : slot + 1;
        if (!table[slot][0]) {
            table[slot][0] = k;
            inserted++;
        }
        table[slot][1] += i;
    }
    for (uint32_t i = 0; i < HASH_KEYS; i++) {
        uint32_t k = (i * 2654435761u & 0xfffffu) | 1;
        uint32_t slot = k % HASH_SLOTS;
        while (table[slot][0] && table[slot][0] != k)
            slot = slot + 1 == HASH_SLOTS ? 0 : slot + 1;
        if (table[slot][0]) {
            found++;
            acc += table[slot][1];
        }
    }
    return inserted << 16 ^ found ^ acc * 0x9e3779b1u;
}

static uint32_t gcd(uint32_t a, uint32_t b)
{
    while (b) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Multiplies (low and high halves), signed and unsigned division, and data-dependent branches. */
static uint32_t kernel_arith(uint32_t round)
{
    uint32_t s = 0xdeadbeefu - round, acc = round;
    int32_t sacc = 0;
    for (uint32_t i = 0; i < 40000; i++) {
        uint32_t a = xorshift32(&s), b = xorshift32(&s);
        uint64_t prod = (uint64_t)a * b;                    /* mul + mulhu */
        int64_t sprod = (int64_t)(int32_t)a * (int32_t)b;   /* mul + mulh */
        acc += (uint32_t)(prod >> 32) ^ (uint32_t)sprod;
        acc += gcd(a | 1, (b >> (i & 15)) | 1);
        int32_t d = (int32_t)(b >> 20) - 2048;              /* may be 0 or negative */
        if (d != 0) sacc += (int32_t)a / d + (int32_t)a % d;
        else sacc ^= (int32_t)a;
        acc = (acc << 5 | acc >> 27) ^ (a / ((b >> 24) | 1));
    }
    return acc ^ (uint32_t)sacc;
}

int main(void)
{
    args_allow(known);
    uint32_t iters = (uint32_t)arg_uint("iters", 25);
    int timing = arg_uint("timing", 0) != 0;

    buf = region_alloc(BUF_BYTES);
    sieve = region_alloc(SIEVE_SPAN);
    keys = region_alloc(SORT_N * 4);
    table = region_alloc(HASH_SLOTS * sizeof table[0]);
    if (!buf || !sieve || !keys || !table) {
        printf("compute: not enough memory\n");
        return EXIT_BAD_ARGS;
    }
    crc_init();
    for (uint32_t n = 2; nbase < sizeof base_primes / sizeof base_primes[0]; n++) {
        uint32_t i = 0;
        while (i < nbase && n % base_primes[i]) i++;
        if (i == nbase) base_primes[nbase++] = n;
    }

    printf("compute: iters=%u\n", iters);
    uint64_t t0 = time_now();
    uint32_t instret0 = csr_read(minstret);
    uint32_t r_crc = 0, r_sieve = 0, r_sort = 0, r_hash = 0, r_arith = 0;
    for (uint32_t round = 0; round < iters; round++) {
        r_crc = crc_word(r_crc, kernel_crc(round));
        r_sieve = crc_word(r_sieve, kernel_sieve(round));
        r_sort = crc_word(r_sort, kernel_sort(round));
        r_hash = crc_word(r_hash, kernel_hash(round));
        r_arith = crc_word(r_arith, kernel_arith(round));
    }
    uint32_t instret = csr_read(minstret) - instret0;
    uint64_t ticks = time_now() - t0;

    uint32_t digest = 0;
    digest = crc_word(digest, r_crc);
    digest = crc_word(digest, r_sieve);
    digest = crc_word(digest, r_sort);
    digest = crc_word(digest, r_hash);
    digest = crc_word(digest, r_arith);
    printf("compute: crc32=%08x sieve=%08x sort=%08x hash=%08x arith=%08x\n",
           r_crc, r_sieve, r_sort, r_hash, r_arith);
    printf("compute: digest=%08x\n", digest);
    if (timing) {
        uint32_t ms = (uint32_t)(ticks / (TIMEBASE_HZ / 1000));
        printf("compute: timing ticks=%llu ms=%u minstret-delta=%u\n", ticks, ms, instret);
    }
    return 0;
}
