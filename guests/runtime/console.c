/* Console on the ns16550a: polled output, interrupt-driven input into a ring, printf. */
#include "runtime.h"

#define INPUT_RING 256  /* power of two */
static volatile uint8_t input_ring[INPUT_RING];
static volatile uint32_t input_head, input_tail;   /* head: next write (irq), tail: next read */

static inline uint8_t uart_read(uint32_t reg) { return mmio_read8(UART_BASE + reg); }
static inline void uart_write(uint32_t reg, uint8_t v) { mmio_write8(UART_BASE + reg, v); }

void uart_init(void)
{
    uart_write(UART_IER, 0);
    uart_write(UART_LCR, 0x03);        /* 8N1, DLAB off (the baud divisor does not matter here) */
    uart_write(UART_FCR, 0x07);        /* enable and reset FIFOs */
    uart_write(UART_IER, UART_IER_RDI);
}

void console_putc(char c)
{
    while (!(uart_read(UART_LSR) & UART_LSR_THRE))
        ;
    uart_write(UART_THR, (uint8_t)c);
}

void console_puts(const char *s)
{
    while (*s)
        console_putc(*s++);
}

void uart_interrupt(void)
{
    while (uart_read(UART_LSR) & UART_LSR_DR) {
        uint8_t c = uart_read(UART_RBR);
        if (input_head - input_tail < INPUT_RING) {   /* drop when full */
            input_ring[input_head % INPUT_RING] = c;
            input_head++;
        }
    }
}

int console_getc(void)
{
    if (input_tail == input_head)
        return -1;
    int c = input_ring[input_tail % INPUT_RING];
    input_tail++;
    return c;
}

/* printf: %d %i %u %x %X %s %c %p %%, with optional '-', '0', width and l/ll. */
static int put_padded(const char *s, int len, int width, int left, char pad)
{
    int n = 0;
    if (!left)
        for (; len + n < width; n++)
            console_putc(pad);
    for (int i = 0; i < len; i++)
        console_putc(s[i]);
    if (left)
        for (; len + n < width; n++)
            console_putc(' ');
    return len + n;
}

int vprintf(const char *fmt, va_list ap)
{
    int out = 0;
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            console_putc(*fmt);
            out++;
            continue;
        }
        fmt++;
        int left = 0, width = 0, longs = 0;
        char pad = ' ';
        for (; *fmt == '-' || *fmt == '0'; fmt++) {
            if (*fmt == '-') left = 1;
            else pad = '0';
        }
        for (; *fmt >= '0' && *fmt <= '9'; fmt++)
            width = width * 10 + (*fmt - '0');
        for (; *fmt == 'l'; fmt++)
            longs++;
        char buf[24];
        char *end = buf + sizeof buf, *p = end;
        uint64_t v;
        int neg = 0;
        switch (*fmt) {
        case 'd': case 'i': {
            int64_t sv = longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
            neg = sv < 0;
            v = neg ? -(uint64_t)sv : (uint64_t)sv;
            goto decimal;
        }
        case 'u':
            v = longs >= 2 ? va_arg(ap, unsigned long long) : longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
        decimal:
            do { *--p = (char)('0' + v % 10); v /= 10; } while (v);
            if (neg) {
                if (pad == '0') { console_putc('-'); out++; width--; }
                else *--p = '-';
            }
            break;
        case 'x': case 'X': case 'p': {
            const char *digits = *fmt == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            if (*fmt == 'p') { v = (uintptr_t)va_arg(ap, void *); pad = '0'; width = 8; }
            else v = longs >= 2 ? va_arg(ap, unsigned long long) : longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            do { *--p = digits[v & 15]; v >>= 4; } while (v);
            break;
        }
        case 'c':
            *--p = (char)va_arg(ap, int);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            out += put_padded(s, (int)strlen(s), width, left, ' ');
            continue;
        }
        case '%':
            *--p = '%';
            break;
        default:   /* unknown conversion: print it as is */
            console_putc('%');
            out++;
            if (!*fmt) return out;
            *--p = *fmt;
            break;
        }
        out += put_padded(p, (int)(end - p), width, left, pad);
    }
    return out;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}
