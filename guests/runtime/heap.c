/* mem_alloc/mem_free: power-of-two size classes (16 B .. 2 KiB) carved from whole pages of the
 * page allocator, and whole-page runs above that. Free blocks wait on one list per class. */
#include "runtime.h"

#define HDR_BYTES 8u
#define MIN_SHIFT 4u            /* 16-byte blocks */
#define MAX_SHIFT 11u           /* 2 KiB blocks; larger requests get their own pages */
#define NCLASSES (MAX_SHIFT - MIN_SHIFT + 1)
#define MAGIC 0x6b6d656du

struct block { struct block *next; };
static struct block *free_list[NCLASSES];

void *mem_alloc(size_t n)
{
    if (n > 0x7fffffffu - HDR_BYTES - PAGE_SIZE)
        return 0;
    size_t need = n + HDR_BYTES;
    if (need > (1u << MAX_SHIFT)) {
        uint32_t pages = (uint32_t)((need + PAGE_SIZE - 1) / PAGE_SIZE);
        uint32_t *h = page_alloc(pages);
        if (!h)
            return 0;
        h[0] = MAGIC;
        h[1] = 0x80000000u | pages;
        return h + 2;
    }
    uint32_t cls = 0;
    while ((1u << (cls + MIN_SHIFT)) < need)
        cls++;
    if (!free_list[cls]) {
        uint8_t *page = page_alloc(1);
        if (!page)
            return 0;
        uint32_t size = 1u << (cls + MIN_SHIFT);
        for (uint32_t off = 0; off + size <= PAGE_SIZE; off += size) {
            struct block *b = (struct block *)(page + off);
            b->next = free_list[cls];
            free_list[cls] = b;
        }
    }
    struct block *b = free_list[cls];
    free_list[cls] = b->next;
    uint32_t *h = (uint32_t *)b;
    h[0] = MAGIC;
    h[1] = cls;
    return h + 2;
}

void mem_free(void *p)
{
    if (!p)
        return;
    uint32_t *h = (uint32_t *)p - 2;
    if (h[0] != MAGIC)
        return;                 /* not ours (or freed twice): leave it alone */
    h[0] = 0;
    if (h[1] & 0x80000000u) {
        page_free(h, h[1] & 0x7fffffffu);
        return;
    }
    uint32_t cls = h[1];
    if (cls >= NCLASSES)
        return;
    struct block *b = (struct block *)h;
    b->next = free_list[cls];
    free_list[cls] = b;
}
