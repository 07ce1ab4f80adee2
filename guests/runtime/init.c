/* Start-up after start.S: devices, boot information, then the app's main(). */
#include "runtime.h"

uint32_t boot_hartid, boot_fdt;

void runtime_start(void) __attribute__((noreturn));
void runtime_start(void)
{
    uart_init();
    if (fdt_parse(boot_fdt) != 0) {
        printf("runtime: no device tree at 0x%08x\n", boot_fdt);
        poweroff(EXIT_BAD_ARGS);
    }
    region_init();
    args_init();
    timer_disarm();                         /* mtimecmp resets to 0, i.e. pending */
    const char *idle = arg_str("idle", "wfi");
    if (strcmp(idle, "poll") == 0)
        idle_poll = 1;
    else if (strcmp(idle, "wfi") != 0)
        arg_fail("idle", idle, "want wfi or poll");
    mmio_write32(PLIC_THRESHOLD, 0);
    plic_enable(UART_IRQ);
    csr_set(mie, MIP_MEIP);
    irq_enable();
    poweroff(main());
}

void poweroff(int code)
{
    irq_disable();
    mmio_write32(TEST_BASE, code == 0 ? TEST_PASS : TEST_FAIL | ((uint32_t)code << 16));
    for (;;)
        wfi();
}
