/* A page allocator that can free: one bit per page over the free RAM after the image, plus
 * a second bitmap for pages lent to the balloon. A ballooned page counts as in use; an
 * allocation that finds no free run takes ballooned pages back through page_reclaim_hook. */
#include "runtime.h"

static uint32_t base, npages, nfree, nballoon, cursor;
static uint32_t *used, *ballooned;      /* bit set: page in use / page in the balloon */
void (*page_reclaim_hook)(uint32_t first, uint32_t n);

static inline int bit(const uint32_t *m, uint32_t i) { return (m[i >> 5] >> (i & 31)) & 1; }
static inline void set(uint32_t *m, uint32_t i) { m[i >> 5] |= 1u << (i & 31); }
static inline void clr(uint32_t *m, uint32_t i) { m[i >> 5] &= ~(1u << (i & 31)); }

void pages_init(void)
{
    if (used)
        return;
    uint32_t avail = (uint32_t)(region_free() / PAGE_SIZE);
    uint32_t words = (avail + 31) / 32;
    uint32_t meta = (2 * words * 4 + PAGE_SIZE - 1) / PAGE_SIZE;
    if (avail <= meta)
        return;
    used = region_alloc(meta * PAGE_SIZE);
    ballooned = used + words;
    memset(used, 0, 2 * words * 4);
    npages = avail - meta;
    base = (uint32_t)region_alloc(npages * PAGE_SIZE);
    nfree = npages;
    for (uint32_t i = npages; i < words * 32; i++)     /* the tail of the last word: never free */
        set(used, i);
}

uint32_t pages_total(void) { pages_init(); return npages; }
uint32_t pages_free(void) { pages_init(); return nfree; }
uint32_t pages_ballooned(void) { return nballoon; }
void *page_addr(uint32_t i) { return (void *)(base + i * PAGE_SIZE); }
uint32_t page_index(const void *p) { return ((uint32_t)p - base) / PAGE_SIZE; }

/* First run of n pages at or after `from` in which every page is free (or, with
 * `take_balloon`, free or ballooned); npages if none. */
static uint32_t find_run(uint32_t from, uint32_t n, int take_balloon)
{
    uint32_t run = 0, start = from;
    for (uint32_t i = from; i < npages;) {
        uint32_t w = used[i >> 5];
        if (take_balloon)
            w &= ~ballooned[i >> 5];
        if ((i & 31) == 0 && w == 0xffffffffu) {
            run = 0;
            i += 32;
            start = i;
            continue;
        }
        if ((w >> (i & 31)) & 1) {
            run = 0;
            start = i + 1;
        } else if (++run == n) {
            return start;
        }
        i++;
    }
    return npages;
}

static void mark_used(uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n; i++) {
        set(used, i);
    }
    nfree -= n;
}

void *page_alloc(uint32_t n)
{
    pages_init();
    if (n == 0 || n > npages)
        return 0;
    uint32_t first = find_run(0, n, 0);
    if (first < npages) {
        mark_used(first, n);
        return page_addr(first);
    }
    if (!nballoon)
        return 0;
    first = find_run(0, n, 1);
    if (first == npages)
        return 0;
    /* the run mixes free and ballooned pages: get the ballooned ones back first */
    if (page_reclaim_hook)
        page_reclaim_hook(first, n);
    for (uint32_t i = first; i < first + n; i++) {
        if (bit(ballooned, i)) {
            clr(ballooned, i);
            nballoon--;
        } else {
            set(used, i);
            nfree--;
        }
    }
    return page_addr(first);
}

void page_free(void *p, uint32_t n)
{
    uint32_t first = page_index(p);
    if ((uint32_t)p < base || first >= npages || n > npages - first)
        return;
    for (uint32_t i = first; i < first + n; i++) {
        if (bit(used, i) && !bit(ballooned, i)) {
            clr(used, i);
            nfree++;
        }
    }
}

uint32_t page_take_run(uint32_t max, uint32_t *first)
{
    pages_init();
    if (!nfree || !max)
        return 0;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t i = find_run(cursor, 1, 0);
        if (i == npages) {
            cursor = 0;
            continue;
        }
        uint32_t n = 1;
        while (n < max && i + n < npages && !bit(used, i + n))
            n++;
        mark_used(i, n);
        cursor = i + n;
        *first = i;
        return n;
    }
    return 0;
}

void page_set_ballooned(uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n && i < npages; i++)
        if (bit(used, i) && !bit(ballooned, i)) {
            set(ballooned, i);
            nballoon++;
        }
}

uint32_t page_next_ballooned(uint32_t from)
{
    for (uint32_t i = from; i < npages; i++) {
        if ((i & 31) == 0 && ballooned[i >> 5] == 0) {
            i += 31;
            continue;
        }
        if (bit(ballooned, i))
            return i;
    }
    return npages;
}

int page_is_ballooned(uint32_t i)
{
    return i < npages && bit(ballooned, i);
}

void page_unballoon(uint32_t i)
{
    if (page_is_ballooned(i)) {
        clr(ballooned, i);
        clr(used, i);
        nballoon--;
        nfree++;
    }
}
