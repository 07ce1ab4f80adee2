/* Entry point and trap entry/exit. The hart starts here in M-mode with a0 = hart id and
 * a1 = FDT address. Traps always run on their own stack, whose top lives in mscratch. */

#define FRAME_SIZE 144  /* struct trap_frame: x0..x31, mepc, mstatus, mcause, mtval */

    .section .text.start, "ax"
    .globl _start
_start:
    csrw mie, zero
    bnez a0, park                  /* one hart runs the guest; others sleep */
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, stack_top
    mv s0, a0
    mv s1, a1
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sw zero, 0(t0)
    addi t0, t0, 4
    j 1b
2:  la t0, boot_hartid
    sw s0, 0(t0)
    la t0, boot_fdt
    sw s1, 0(t0)
    la t0, trap_vector
    csrw mtvec, t0
    la t0, trap_stack_top
    csrw mscratch, t0
    call runtime_start             /* never returns */
park:
    wfi
    j park

    .text
    .align 4
    .globl trap_vector
trap_vector:
    csrrw sp, mscratch, sp         /* sp = trap stack, mscratch = interrupted sp */
    addi sp, sp, -FRAME_SIZE
    sw x1, 4(sp)
    .irp n, 3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sw x\n, (\n * 4)(sp)
    .endr
    csrr t0, mscratch
    sw t0, 8(sp)
    csrr t0, mepc
    sw t0, 128(sp)
    csrr t0, mstatus
    sw t0, 132(sp)
    csrr t0, mcause
    sw t0, 136(sp)
    csrr t0, mtval
    sw t0, 140(sp)
    mv a0, sp
    call trap_dispatch
    /* the dispatcher may have changed mepc/mstatus/registers in the frame */
    lw t0, 128(sp)
    csrw mepc, t0
    lw t0, 132(sp)
    csrw mstatus, t0
    addi t0, sp, FRAME_SIZE
    csrw mscratch, t0
    lw x1, 4(sp)
    .irp n, 3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    lw x\n, (\n * 4)(sp)
    .endr
    lw sp, 8(sp)
    mret

    .section .bss.stacks, "aw", @nobits
    .align 4
    .space 32768
    .globl stack_top
stack_top:
    .space 8192
    .globl trap_stack_top
trap_stack_top:
