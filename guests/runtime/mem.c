/* memset & co., and the region allocator for the free RAM between the image and the FDT. */
#include "runtime.h"

void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    if (n >= 16 && ((uintptr_t)p & 3) == 0) {
        uint32_t w = (uint8_t)c * 0x01010101u;
        for (; n >= 4; n -= 4, p += 4)
            *(uint32_t *)p = w;
    }
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *dp = d;
    const uint8_t *sp = s;
    if ((((uintptr_t)dp | (uintptr_t)sp) & 3) == 0)
        for (; n >= 4; n -= 4, dp += 4, sp += 4)
            *(uint32_t *)dp = *(const uint32_t *)sp;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    uint8_t *dp = d;
    const uint8_t *sp = s;
    if (dp <= sp || dp >= sp + n)
        return memcpy(d, s, n);
    while (n--)
        dp[n] = sp[n];
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    for (; *a && *a == *b; a++, b++)
        ;
    return (uint8_t)*a - (uint8_t)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n && *a && *a == *b; n--, a++, b++)
        ;
    return n ? (uint8_t)*a - (uint8_t)*b : 0;
}

extern char _end[];     /* end of the image (linker script), page-aligned */
static uintptr_t region_next, region_limit;

void region_init(void)
{
    region_next = ((uintptr_t)_end + PAGE_SIZE - 1) & ~(uintptr_t)(PAGE_SIZE - 1);
    uint32_t ram_end = ram_base + ram_size;   /* wraps to 0 for 2 GiB, hence the check below */
    region_limit = boot_fdt & ~(PAGE_SIZE - 1);
    if (ram_end > ram_base && region_limit > ram_end)
        region_limit = ram_end;
    if (region_limit < region_next)
        region_limit = region_next;
}

void *region_alloc(size_t bytes)
{
    size_t rounded = (bytes + PAGE_SIZE - 1) & ~(size_t)(PAGE_SIZE - 1);
    if (rounded < bytes || rounded > region_limit - region_next)
        return 0;
    void *p = (void *)region_next;
    region_next += rounded;
    return p;
}

size_t region_free(void)
{
    return region_limit - region_next;
}
