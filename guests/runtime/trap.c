/* The C half of trap handling: interrupts are serviced, unexpected exceptions are fatal. */
#include "runtime.h"

int (*trap_hook)(struct trap_frame *f);
void (*timer_hook)(void);
volatile uint32_t timer_interrupts, external_interrupts;
static void (*irq_handlers[IRQ_HANDLERS])(uint32_t src);

void irq_register(uint32_t src, void (*handler)(uint32_t src))
{
    if (src == 0 || src >= IRQ_HANDLERS)
        return;
    irq_handlers[src] = handler;
    plic_enable(src);
}

void plic_enable(uint32_t src)
{
    mmio_write32(PLIC_PRIORITY(src), 1);
    uint32_t reg = PLIC_ENABLE + 4 * (src / 32);
    mmio_write32(reg, mmio_read32(reg) | (1u << (src % 32)));
}

const char *trap_cause_name(uint32_t mcause)
{
    static const char *const exceptions[] = {
        "instruction address misaligned", "instruction access fault", "illegal instruction",
        "breakpoint", "load address misaligned", "load access fault",
        "store/AMO address misaligned", "store/AMO access fault", "ecall from U-mode",
        "ecall from S-mode", "reserved", "ecall from M-mode",
        "instruction page fault", "load page fault", "reserved", "store/AMO page fault",
    };
    if (mcause & MCAUSE_INTR) {
        switch (mcause & ~MCAUSE_INTR) {
        case IRQ_M_SOFT: return "machine software interrupt";
        case IRQ_M_TIMER: return "machine timer interrupt";
        case IRQ_M_EXT: return "machine external interrupt";
        default: return "interrupt";
        }
    }
    return mcause < 16 ? exceptions[mcause] : "exception";
}

static void external_interrupt(void)
{
    uint32_t src;
    while ((src = mmio_read32(PLIC_CLAIM)) != 0) {
        if (src == UART_IRQ)
            uart_interrupt();
        else if (src < IRQ_HANDLERS && irq_handlers[src])
            irq_handlers[src](src);
        external_interrupts++;
        mmio_write32(PLIC_CLAIM, src);
    }
}

void trap_dispatch(struct trap_frame *f);
void trap_dispatch(struct trap_frame *f)
{
    if (trap_hook && trap_hook(f))
        return;
    if (f->mcause == (MCAUSE_INTR | IRQ_M_TIMER)) {
        timer_disarm();
        timer_interrupts++;
        if (timer_hook)
            timer_hook();
        return;
    }
    if (f->mcause == (MCAUSE_INTR | IRQ_M_EXT)) {
        external_interrupt();
        return;
    }
    printf("\n*** unexpected trap: mcause=0x%08x (%s) mepc=0x%08x mtval=0x%08x\n",
           f->mcause, trap_cause_name(f->mcause), f->mepc, f->mtval);
    printf("*** ra=0x%08x sp=0x%08x mstatus=0x%08x\n", f->x[1], f->x[2], f->mstatus);
    poweroff(EXIT_TRAP);
}
