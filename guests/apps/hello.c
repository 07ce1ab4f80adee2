/* hello: the smallest guest. Prints a greeting and its boot arguments, then powers off. */
#include "runtime.h"

int main(void)
{
    printf("Hello from a tern guest: RV32 in M-mode on hart %u, %u MiB of RAM at 0x%08x.\n",
           boot_hartid, ram_size >> 20, ram_base);
    printf("bootargs: \"%s\"\n", bootargs);
    return 0;
}
