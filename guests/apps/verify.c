/* verify: QEMU's migration-test guest pattern, self-checking.
 * Every pass increments the first byte of each 4 KiB page of the region; before the increment
 * the byte must equal the pass number (mod 256), so a page lost or rolled back by a migration
 * shows up as 'X'. Output: 'A' once the region is zeroed, 'B' every `mark` passes, 'X' once on
 * the first inconsistency (the guest keeps running and resynchronises the page). */
#include "runtime.h"

static const char *const known[] = { "region", "pace", "mark", 0 };

int main(void)
{
    args_allow(known);
    uint64_t region = arg_size("region", 16u << 20);
    uint64_t pace = arg_duration("pace", 0);
    uint64_t mark = arg_uint("mark", 1);
    if (region < PAGE_SIZE || region > 0xffffffffu)
        arg_fail("region", arg_str("region", ""), "want at least 4K");
    if (mark == 0)
        arg_fail("mark", arg_str("mark", ""), "want at least 1");
    uint8_t *base = region_alloc((size_t)region);
    if (!base) {
        printf("verify: region of %llu bytes does not fit (%u bytes free)\n", region, region_free());
        return EXIT_BAD_ARGS;
    }
    uint32_t pages = (uint32_t)((region + PAGE_SIZE - 1) / PAGE_SIZE);

    for (uint32_t i = 0; i < pages; i++)
        base[i * PAGE_SIZE] = 0;
    console_putc('A');

    uint32_t pass = 0, since_mark = 0;
    int reported = 0;
    uint64_t next = time_now() + pace;
    for (;;) {
        volatile uint8_t *p = base;
        uint8_t want = (uint8_t)pass;
        for (uint32_t i = 0; i < pages; i++, p += PAGE_SIZE) {
            uint8_t got = *p;
            if (got != want && !reported) {
                console_putc('X');
                reported = 1;
            }
            *p = (uint8_t)(want + 1);
        }
        pass++;
        if (++since_mark == mark) {
            console_putc('B');
            since_mark = 0;
        }
        if (pace) {
            sleep_until(next);
            next += pace;
            uint64_t now = time_now();
            if (next < now)         /* fell behind (e.g. paused): do not try to catch up */
                next = now;
        }
    }
}
