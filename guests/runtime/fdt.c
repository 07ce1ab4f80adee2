/* Just enough of a flattened device tree reader for /chosen/bootargs and /memory reg. */
#include "runtime.h"

#define FDT_MAGIC       0xd00dfeedu
#define FDT_BEGIN_NODE  1u
#define FDT_END_NODE    2u
#define FDT_PROP        3u
#define FDT_NOP         4u
#define FDT_END         9u

uint32_t ram_base, ram_size;
const char *bootargs = "";
static char bootargs_copy[1024];

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads a value of `cells` 32-bit cells; RV32 only needs the low 32 bits. */
static uint32_t read_cells(const uint8_t **p, uint32_t cells)
{
    uint32_t v = 0;
    for (uint32_t i = 0; i < cells; i++, *p += 4)
        v = be32(*p);
    return v;
}

int fdt_parse(uint32_t fdt)
{
    const uint8_t *h = (const uint8_t *)fdt;
    if (fdt < RAM_BASE || be32(h) != FDT_MAGIC)
        return -1;
    const uint8_t *p = h + be32(h + 8);          /* off_dt_struct */
    const char *strings = (const char *)h + be32(h + 12);
    uint32_t addr_cells = 2, size_cells = 2, depth = 0;
    const char *node = "";                      /* name of the current node at depth 2 */

    for (;;) {
        uint32_t token = be32(p);
        p += 4;
        if (token == FDT_BEGIN_NODE) {
            const char *name = (const char *)p;
            depth++;
            if (depth == 2)
                node = name;
            p += (strlen(name) + 4) & ~3u;
        } else if (token == FDT_END_NODE) {
            depth--;
        } else if (token == FDT_PROP) {
            uint32_t len = be32(p), nameoff = be32(p + 4);
            const uint8_t *val = p + 8;
            const char *prop = strings + nameoff;
            if (depth == 1 && strcmp(prop, "#address-cells") == 0)
                addr_cells = be32(val);
            else if (depth == 1 && strcmp(prop, "#size-cells") == 0)
                size_cells = be32(val);
            else if (depth == 2 && strcmp(node, "chosen") == 0 && strcmp(prop, "bootargs") == 0) {
                if (len > sizeof bootargs_copy - 1)
                    len = sizeof bootargs_copy - 1;
                memcpy(bootargs_copy, val, len);
                bootargs_copy[len] = 0;
                bootargs = bootargs_copy;
            } else if (depth == 2 && strncmp(node, "memory", 6) == 0 && strcmp(prop, "reg") == 0 && ram_size == 0) {
                ram_base = read_cells(&val, addr_cells);
                ram_size = read_cells(&val, size_cells);
            }
            p += 8 + ((len + 3) & ~3u);
        } else if (token == FDT_NOP) {
            continue;
        } else {
            break;  /* FDT_END or garbage */
        }
    }
    return ram_size ? 0 : -1;
}
