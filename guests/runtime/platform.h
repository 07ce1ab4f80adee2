/* The QEMU `virt` board as tern reproduces it: addresses, registers and CSR helpers. */
#ifndef PLATFORM_H
#define PLATFORM_H

/* Our own fixed-width types: the compiler's stdint.h makes uint32_t a `long`, which
 * would make every %x in printf a format warning. */
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef unsigned int uintptr_t;
#define INT32_MIN  (-2147483647 - 1)
#define INT32_MAX  2147483647
#define UINT32_MAX 0xffffffffu
#define UINT64_MAX 0xffffffffffffffffull

#define RAM_BASE        0x80000000u
#define PAGE_SIZE       4096u

#define TEST_BASE       0x00100000u /* sifive_test finisher */
#define TEST_PASS       0x5555u
#define TEST_FAIL       0x3333u     /* | code << 16 */

#define CLINT_BASE      0x02000000u
#define CLINT_MSIP      (CLINT_BASE + 0x0000u)
#define CLINT_MTIMECMP  (CLINT_BASE + 0x4000u)
#define CLINT_MTIME     (CLINT_BASE + 0xBFF8u)
#define TIMEBASE_HZ     10000000u   /* mtime ticks per second */

#define PLIC_BASE       0x0C000000u
#define PLIC_PRIORITY(src) (PLIC_BASE + 4u * (src))
#define PLIC_PENDING    (PLIC_BASE + 0x1000u)
#define PLIC_ENABLE     (PLIC_BASE + 0x2000u)   /* context 0 = hart 0 M-mode */
#define PLIC_THRESHOLD  (PLIC_BASE + 0x200000u)
#define PLIC_CLAIM      (PLIC_BASE + 0x200004u) /* read = claim, write = complete */

#define UART_BASE       0x10000000u
#define UART_IRQ        10u
#define UART_RBR        0u  /* read, DLAB=0 */
#define UART_THR        0u  /* write, DLAB=0 */
#define UART_IER        1u
#define UART_IIR        2u  /* read */
#define UART_FCR        2u  /* write */
#define UART_LCR        3u
#define UART_MCR        4u
#define UART_LSR        5u
#define UART_SCR        7u
#define UART_IER_RDI    0x01u
#define UART_IER_THRI   0x02u
#define UART_LSR_DR     0x01u
#define UART_LSR_THRE   0x20u

/* mstatus / mie / mip bits */
#define MSTATUS_MIE     (1u << 3)
#define MSTATUS_MPIE    (1u << 7)
#define MSTATUS_MPP     (3u << 11)
#define MIP_MSIP        (1u << 3)
#define MIP_MTIP        (1u << 7)
#define MIP_MEIP        (1u << 11)

/* mcause values */
#define MCAUSE_INTR     0x80000000u
#define IRQ_M_SOFT      3u
#define IRQ_M_TIMER     7u
#define IRQ_M_EXT       11u
#define EXC_INSN_MISALIGNED 0u
#define EXC_INSN_ACCESS     1u
#define EXC_ILLEGAL         2u
#define EXC_BREAKPOINT      3u
#define EXC_LOAD_MISALIGNED 4u
#define EXC_LOAD_ACCESS     5u
#define EXC_STORE_MISALIGNED 6u
#define EXC_STORE_ACCESS    7u
#define EXC_ECALL_U         8u
#define EXC_ECALL_M         11u

static inline uint32_t mmio_read32(uint32_t addr) { return *(volatile uint32_t *)addr; }
static inline void mmio_write32(uint32_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }
static inline uint8_t mmio_read8(uint32_t addr) { return *(volatile uint8_t *)addr; }
static inline void mmio_write8(uint32_t addr, uint8_t v) { *(volatile uint8_t *)addr = v; }

#define csr_read(csr) ({ uint32_t v_; __asm__ volatile("csrr %0, " #csr : "=r"(v_) : : "memory"); v_; })
#define csr_write(csr, v) __asm__ volatile("csrw " #csr ", %0" : : "rK"(v) : "memory")
#define csr_set(csr, v) __asm__ volatile("csrs " #csr ", %0" : : "rK"(v) : "memory")
#define csr_clear(csr, v) __asm__ volatile("csrc " #csr ", %0" : : "rK"(v) : "memory")
#define csr_swap(csr, v) ({ uint32_t o_; __asm__ volatile("csrrw %0, " #csr ", %1" : "=r"(o_) : "rK"(v) : "memory"); o_; })

static inline void irq_enable(void) { csr_set(mstatus, MSTATUS_MIE); }
static inline void irq_disable(void) { csr_clear(mstatus, MSTATUS_MIE); }
static inline void wfi(void) { __asm__ volatile("wfi" : : : "memory"); }

#endif
