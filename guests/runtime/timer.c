/* Guest time from the CLINT: mtime and mtimecmp are 64-bit registers read as 32-bit halves. */
#include "runtime.h"

uint64_t time_now(void)
{
    uint32_t hi, lo;
    do {
        hi = mmio_read32(CLINT_MTIME + 4);
        lo = mmio_read32(CLINT_MTIME);
    } while (mmio_read32(CLINT_MTIME + 4) != hi);   /* lo wrapped between the reads */
    return (uint64_t)hi << 32 | lo;
}

void timer_arm(uint64_t when)
{
    /* low half to max first, so no intermediate value lies in the past */
    mmio_write32(CLINT_MTIMECMP, 0xffffffffu);
    mmio_write32(CLINT_MTIMECMP + 4, (uint32_t)(when >> 32));
    mmio_write32(CLINT_MTIMECMP, (uint32_t)when);
    csr_set(mie, MIP_MTIP);
}

void timer_disarm(void)
{
    csr_clear(mie, MIP_MTIP);
    mmio_write32(CLINT_MTIMECMP + 4, 0xffffffffu);
    mmio_write32(CLINT_MTIMECMP, 0xffffffffu);
}

int idle_poll;     /* boot arg idle=poll: spin on mtime instead of wfi (see README) */

void sleep_until(uint64_t when)
{
    if (idle_poll) {
        while (time_now() < when)
            ;
        return;
    }
    /* With MIE off, wfi still wakes on a pending enabled interrupt, so a timer that fires
     * between the check and the wfi cannot be lost; it is taken once MIE is back on. */
    uint32_t was = csr_read(mstatus) & MSTATUS_MIE;
    while (time_now() < when) {
        irq_disable();
        timer_arm(when);
        if (time_now() < when)
            wfi();
        irq_enable();
    }
    if (!was)
        irq_disable();
}
