/* munch: a configurable memory writer for migration experiments.
 * A writable working set (wws) is dirtied at a given rate of guest time in one of three
 * address patterns; a resident set (rss) is filled once and then only read back to check it;
 * a heap grows and shrinks through phases (heap=16M:2s,48M:1s), freeing what it gives back.
 * With balloon=on|self the virtio-balloon driver runs (self: dynamic self-ballooning).
 * Prints one start-up line, then a status line every `report` of guest time. */
#include "runtime.h"

static const char *const known[] = {
    "wws", "rate", "pattern", "rss", "stride", "report", "time", "rsscheck",
    "heap", "balloon", "balloon-period", "balloon-reserve", 0
};

#define WORDS_PER_PAGE (PAGE_SIZE / 4)
#define PERIOD_TICKS   (TIMEBASE_HZ / 100)   /* pacing granularity: 10 ms of guest time */
#define HOT_PERCENT    90                    /* hot-cold: share of writes to the hot part */
#define HOT_FRACTION   10                    /* hot-cold: the hot part is 1/10 of the wws */

enum pattern { SEQ, RANDOM, HOT_COLD };

static uint8_t *wws_base, *rss_base;
static uint32_t wws_pages, rss_pages, stride, hot_pages;
static enum pattern pattern;
static uint32_t data_seed = 0x6d756e63u, pick_seed = 0x68756e67u;
static uint64_t touches;
static uint32_t pass_pos, pass_offset;   /* touches into the current pass over the wws; its offset */

/* rss: every page holds 1023 pseudo-random non-zero words and their sum in the last word,
 * so any part of it can be checked on its own. */
static uint32_t rss_fill(void)
{
    uint32_t s = 0x72737321u, total = 0;
    for (uint32_t p = 0; p < rss_pages; p++) {
        uint32_t *w = (uint32_t *)(rss_base + p * PAGE_SIZE), sum = 0;
        for (uint32_t i = 0; i < WORDS_PER_PAGE - 1; i++) {
            uint32_t v = xorshift32(&s);
            w[i] = v;
            sum += v;
        }
        w[WORDS_PER_PAGE - 1] = sum;
        total += sum;
    }
    return total;
}

static int rss_page_ok(uint32_t p)
{
    const uint32_t *w = (const uint32_t *)(rss_base + p * PAGE_SIZE);
    uint32_t sum = 0;
    for (uint32_t i = 0; i < WORDS_PER_PAGE - 1; i++)
        sum += w[i];
    return sum == w[WORDS_PER_PAGE - 1];
}

static uint32_t pick_page(void)
{
    switch (pattern) {
    case SEQ:
        return pass_pos;
    case RANDOM:
        return xorshift32(&pick_seed) % wws_pages;
    default:
        if (hot_pages == wws_pages || xorshift32(&pick_seed) % 100 < HOT_PERCENT)
            return xorshift32(&pick_seed) % hot_pages;
        return hot_pages + xorshift32(&pick_seed) % (wws_pages - hot_pages);
    }
}

/* Writes `stride` pseudo-random bytes into one page; the offset moves on every pass over the
 * wws, so small strides rewrite a few bytes per page and eventually the whole page. */
static void touch(void)
{
    uint32_t page = pick_page();
    uint32_t off = pass_offset + stride > PAGE_SIZE ? PAGE_SIZE - stride : pass_offset;
    uint8_t *p = wws_base + page * PAGE_SIZE + off;
    if (((off | stride) & 3) == 0) {
        uint32_t *w = (uint32_t *)p;
        for (uint32_t i = 0; i < stride / 4; i++)
            w[i] = xorshift32(&data_seed);
    } else {
        for (uint32_t i = 0; i < stride; i++)
            p[i] = (uint8_t)(xorshift32(&data_seed) | 1);
    }
    touches++;
    if (++pass_pos == wws_pages) {
        pass_pos = 0;
        pass_offset = (pass_offset + stride) % PAGE_SIZE;
    }
}

/* ---- heap phases: chunks of HEAP_CHUNK bytes, each filled with words derived from its
 * address and checked when it is freed, so a page the balloon took while in use shows up. */
#define HEAP_CHUNK_PAGES 256u                /* 1 MiB */
#define MAX_PHASES 16
#define MAX_CHUNKS 2048
static uint32_t phase_chunks[MAX_PHASES];
static uint64_t phase_ticks[MAX_PHASES], phases_total;
static uint32_t nphases, heap_held, heap_fails, heap_bad;
static uint32_t *heap_chunk[MAX_CHUNKS];

static void parse_heap(const char *spec)
{
    char tok[64];
    const char *p = spec;
    while (*p) {
        size_t n = 0;
        while (p[n] && p[n] != ',')
            n++;
        if (n == 0 || n >= sizeof tok || nphases == MAX_PHASES)
            arg_fail("heap", spec, "want up to 16 phases SIZE:DURATION separated by commas");
        memcpy(tok, p, n);
        tok[n] = 0;
        char *colon = tok;
        while (*colon && *colon != ':')
            colon++;
        uint64_t size, ticks;
        if (!*colon)
            arg_fail("heap", spec, "want SIZE:DURATION phases, e.g. 16M:2s,48M:1s");
        *colon = 0;
        if (parse_size(tok, &size) || parse_duration(colon + 1, &ticks) || ticks == 0 ||
            size / (HEAP_CHUNK_PAGES * PAGE_SIZE) > MAX_CHUNKS)
            arg_fail("heap", spec, "want SIZE:DURATION phases (at most 2G, positive durations)");
        phase_chunks[nphases] = (uint32_t)((size + HEAP_CHUNK_PAGES * PAGE_SIZE - 1) / (HEAP_CHUNK_PAGES * PAGE_SIZE));
        phase_ticks[nphases] = ticks;
        phases_total += ticks;
        nphases++;
        p += n;
        if (*p == ',')
            p++;
    }
}

static void heap_step(uint64_t elapsed)
{
    if (!nphases)
        return;
    uint64_t t = elapsed % phases_total;
    uint32_t ph = 0;
    while (t >= phase_ticks[ph]) {
        t -= phase_ticks[ph];
        ph++;
    }
    uint32_t want = phase_chunks[ph];
    while (heap_held > want) {
        uint32_t *w = heap_chunk[--heap_held];
        for (uint32_t i = 0; i < HEAP_CHUNK_PAGES * WORDS_PER_PAGE; i += 64)
            if (w[i] != ((uint32_t)&w[i] ^ 0x68656170u) && !heap_bad)
                heap_bad = page_index(&w[i]) + 1;
        page_free(w, HEAP_CHUNK_PAGES);
    }
    while (heap_held < want) {
        uint32_t *w = page_alloc(HEAP_CHUNK_PAGES);
        if (!w) {
            heap_fails++;
            break;
        }
        for (uint32_t i = 0; i < HEAP_CHUNK_PAGES * WORDS_PER_PAGE; i += 64)
            w[i] = (uint32_t)&w[i] ^ 0x68656170u;
        heap_chunk[heap_held++] = w;
    }
}

/* Bytes that may have been written after `elapsed` ticks at `rate` bytes per second. */
static uint64_t budget(uint64_t rate, uint64_t elapsed)
{
    return rate * (elapsed / TIMEBASE_HZ) + rate * (elapsed % TIMEBASE_HZ) / TIMEBASE_HZ;
}

int main(void)
{
    args_allow(known);
    uint64_t wws = arg_size("wws", 16u << 20);
    uint64_t rate = arg_size("rate", 0);
    const char *pat = arg_str("pattern", "seq");
    uint64_t rss = arg_size("rss", 0);
    uint64_t stride64 = arg_size("stride", PAGE_SIZE);
    uint64_t report = arg_duration("report", TIMEBASE_HZ);
    uint64_t stop = arg_duration("time", 0);
    uint64_t rsscheck = arg_size("rsscheck", rss);
    const char *heap = arg_str("heap", "");
    const char *bal = arg_str("balloon", "off");
    uint64_t bal_period = arg_duration("balloon-period", TIMEBASE_HZ);
    uint64_t bal_reserve = arg_size("balloon-reserve", 1u << 20);
    int bal_mode = 0;
    if (strcmp(bal, "on") == 0) bal_mode = BALLOON_HOST;
    else if (strcmp(bal, "self") == 0) bal_mode = BALLOON_SELF;
    else if (strcmp(bal, "off") != 0) arg_fail("balloon", bal, "want off, on or self");
    if (bal_period == 0)
        arg_fail("balloon-period", arg_str("balloon-period", ""), "want a positive duration");
    parse_heap(heap);
    /* the page allocator (and the balloon) only when asked, so plain runs stay as they were */
    int paged = bal_mode || nphases;

    if (strcmp(pat, "seq") == 0) pattern = SEQ;
    else if (strcmp(pat, "random") == 0) pattern = RANDOM;
    else if (strcmp(pat, "hot-cold") == 0) pattern = HOT_COLD;
    else arg_fail("pattern", pat, "want seq, random or hot-cold");
    if (wws < PAGE_SIZE || wws > 0xffffffffu)
        arg_fail("wws", arg_str("wws", ""), "want at least 4K");
    if (stride64 < 1 || stride64 > PAGE_SIZE)
        arg_fail("stride", arg_str("stride", ""), "want 1 to 4096 bytes");
    if (report == 0)
        arg_fail("report", arg_str("report", ""), "want a positive duration");
    if (rss > 0xffffffffu)
        arg_fail("rss", arg_str("rss", ""), "too large");
    stride = (uint32_t)stride64;
    wws_pages = (uint32_t)((wws + PAGE_SIZE - 1) / PAGE_SIZE);
    rss_pages = (uint32_t)((rss + PAGE_SIZE - 1) / PAGE_SIZE);
    hot_pages = wws_pages / HOT_FRACTION ? wws_pages / HOT_FRACTION : 1;
    uint32_t check_pages = (uint32_t)((rsscheck + PAGE_SIZE - 1) / PAGE_SIZE);
    if (check_pages > rss_pages)
        check_pages = rss_pages;

    if (bal_mode && balloon_init(bal_mode, bal_period, (uint32_t)(bal_reserve / PAGE_SIZE)) != 0) {
        printf("munch: balloon=%s but no usable virtio-balloon device\n", bal);
        return EXIT_BAD_ARGS;
    }
    if (paged) {
        pages_init();
        rss_base = rss_pages ? page_alloc(rss_pages) : 0;
        wws_base = page_alloc(wws_pages);
    } else {
        rss_base = region_alloc(rss_pages * PAGE_SIZE);
        wws_base = region_alloc(wws_pages * PAGE_SIZE);
    }
    if ((rss_pages && !rss_base) || !wws_base) {
        printf("munch: wws + rss do not fit in %u free bytes\n", paged ? pages_free() * PAGE_SIZE : region_free());
        return EXIT_BAD_ARGS;
    }
    uint32_t rss_sum = rss_fill();
    printf("munch: wws=%u rate=%llu pattern=%s rss=%u stride=%u report=%llums time=%llums rss-sum=%08x\n",
           wws_pages * PAGE_SIZE, rate, pat, rss_pages * PAGE_SIZE, stride,
           report / (TIMEBASE_HZ / 1000), stop / (TIMEBASE_HZ / 1000), rss_sum);

    uint64_t start = time_now(), next_report = start + report, last_written = 0, last_t = start;
    uint32_t check_cursor = 0, bad_page = 0xffffffffu;
    uint32_t batch = stride >= 65536 ? 1 : 65536 / stride;
    for (;;) {
        uint64_t now = time_now();
        if (now >= next_report || (stop && now - start >= stop)) {
            /* report: progress, and a slice (by default all) of the rss checked */
            for (uint32_t n = 0; n < check_pages && bad_page == 0xffffffffu; n++) {
                if (!rss_page_ok(check_cursor))
                    bad_page = check_cursor;
                check_cursor = check_cursor + 1 == rss_pages ? 0 : check_cursor + 1;
            }
            uint64_t written = touches * stride;
            uint64_t t_ms = (now - start) / (TIMEBASE_HZ / 1000);
            uint64_t span = now - last_t ? now - last_t : 1;
            uint64_t bps = (written - last_written) * TIMEBASE_HZ / span;
            printf("munch: t=%llu.%03llus written=%llu rate=%lluB/s", t_ms / 1000, t_ms % 1000, written, bps);
            if (paged) {
                printf(" heap=%u", heap_held * HEAP_CHUNK_PAGES * PAGE_SIZE);
                if (heap_bad) printf("(BAD page %u)", heap_bad - 1);
                if (heap_fails) printf("(%u allocations failed)", heap_fails);
                printf(" free=%up", pages_free());
            }
            if (bal_mode) {
                const struct balloon_stats *b = balloon_get_stats();
                printf(" balloon=%up target=%up reclaimed=%u hints=%u/%up", b->size, b->target,
                       b->reclaims, b->hint_cmds, b->hinted);
            }
            printf(" rss=");
            if (!rss_pages || !check_pages) printf("-\n");
            else if (bad_page == 0xffffffffu) printf("ok\n");
            else printf("BAD(page %u)\n", bad_page);
            last_written = written;
            last_t = now;
            while (next_report <= now)
                next_report += report;
            if (stop && now - start >= stop)
                return bad_page == 0xffffffffu && !heap_bad ? 0 : EXIT_CHECK_FAILED;
        }
        if (paged) {
            heap_step(now - start);
            if (bal_mode)
                balloon_poll();
        }
        uint64_t deadline = next_report;
        if (stop && start + stop < deadline)
            deadline = start + stop;
        /* reading mtime is an MMIO exit, so look at the clock only every ~64 KiB written */
        if (rate == 0) {
            for (uint32_t i = 0; i < batch; i++)
                touch();
            continue;
        }
        uint64_t allowed = budget(rate, now - start);
        while (touches * stride < allowed && time_now() < deadline)
            for (uint32_t i = 0; i < batch && touches * stride < allowed; i++)
                touch();
        uint64_t wake = now + PERIOD_TICKS;
        sleep_until(wake < deadline ? wake : deadline);
    }
}
