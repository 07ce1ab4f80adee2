/* selftest's assembly half: instructions that must trap, at labels the C half can compare
 * mepc against, and the switch into and out of U-mode. */

    .text

/* M-mode exceptions: the trap hook resumes at mepc + 4 (or at ra for fetch faults). */
    .globl t_illegal_zero, t_illegal_zero_at
t_illegal_zero:
t_illegal_zero_at:
    .word 0x00000000               /* all-zero bits are defined to be illegal */
    ret

    .globl t_csrw_readonly, t_csrw_readonly_at
t_csrw_readonly:
t_csrw_readonly_at:
    .word 0xf1401073               /* csrrw x0, mhartid, x0: a write to a read-only CSR */
    ret

    .globl t_ebreak, t_ebreak_at
t_ebreak:
    nop
t_ebreak_at:
    ebreak
    ret

    .globl t_ecall, t_ecall_at
t_ecall:
    nop
    nop
t_ecall_at:
    ecall
    ret

    .globl t_load, t_load_at       /* a0 = address */
t_load:
t_load_at:
    lw a0, 0(a0)
    ret

    .globl t_store, t_store_at     /* a0 = address */
t_store:
t_store_at:
    sw a0, 0(a0)
    ret

    .globl t_jump                  /* a0 = target that cannot be fetched */
t_jump:
    addi sp, sp, -16
    sw ra, 12(sp)
    jalr ra, a0
    lw ra, 12(sp)
    addi sp, sp, 16
    ret

/* jalr clears bit 0 of its target: returns 1 if it landed on the even address. */
    .globl t_jalr_odd
t_jalr_odd:
    la t0, 1f
    addi t0, t0, 1
    li a0, 0
    jalr x0, 0(t0)
    ret
1:  li a0, 1
    ret

/* jal writes pc + 4 to rd: returns (link - address of the jal). */
    .globl t_jal_link
t_jal_link:
    mv t1, ra
1:  jal ra, 2f
2:  la t0, 1b
    sub a0, ra, t0
    mv ra, t1
    ret

/* auipc 0 yields its own address: returns auipc result - address of the auipc. */
    .globl t_auipc
t_auipc:
1:  auipc a0, 0
    la t0, 1b
    sub a0, a0, t0
    ret

/* mret from M with MPP = M and MPIE = 0: returns mstatus as seen after the mret. */
    .globl t_mret_m
t_mret_m:
    li t0, 0x1800                  /* MPP = M */
    csrs mstatus, t0
    li t0, 0x88                    /* MPIE = 0, MIE = 0 */
    csrc mstatus, t0
    la t0, 1f
    csrw mepc, t0
    mret
1:  csrr a0, mstatus
    ret

/* Self-modifying code lives in .data, which M-mode may execute. */
    .data
    .align 2
    .globl smc_func, smc_insn
smc_func:
smc_insn:
    li a0, 1
    ret
    .text

/* ---- vectored mtvec: entry i records i in vector_hit, then joins the common entry ---- */
    .align 8
    .globl vector_table
vector_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    j vector_stub_\n
    .endr
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
vector_stub_\n:
    csrrw sp, mscratch, sp
    addi sp, sp, -16
    sw t0, 0(sp)
    sw t1, 4(sp)
    li t0, \n
    la t1, vector_hit
    sw t0, 0(t1)
    lw t1, 4(sp)
    lw t0, 0(sp)
    addi sp, sp, 16
    csrrw sp, mscratch, sp
    j trap_vector
    .endr

/* ---- U-mode ----
 * run_user(fn): enter fn in U-mode on the user stack with interrupts off; the C trap hook
 * ends the visit by pointing mepc at user_return with MPP = M. Returns a0 as U left it. */
    .globl run_user, user_return
run_user:
    la t0, user_ctx
    sw ra, 0(t0)
    sw sp, 4(t0)
    sw s0, 8(t0)
    sw s1, 12(t0)
    sw s2, 16(t0)
    sw s3, 20(t0)
    sw s4, 24(t0)
    sw s5, 28(t0)
    sw s6, 32(t0)
    sw s7, 36(t0)
    sw s8, 40(t0)
    sw s9, 44(t0)
    sw s10, 48(t0)
    sw s11, 52(t0)
    sw gp, 56(t0)
    sw tp, 60(t0)
    csrw mepc, a0
    li t0, 0x1888                  /* MPP = U, MPIE = 0, MIE = 0 */
    csrc mstatus, t0
    la sp, user_stack_top
    mret
user_return:
    la t0, user_ctx
    lw ra, 0(t0)
    lw sp, 4(t0)
    lw s0, 8(t0)
    lw s1, 12(t0)
    lw s2, 16(t0)
    lw s3, 20(t0)
    lw s4, 24(t0)
    lw s5, 28(t0)
    lw s6, 32(t0)
    lw s7, 36(t0)
    lw s8, 40(t0)
    lw s9, 44(t0)
    lw s10, 48(t0)
    lw s11, 52(t0)
    lw gp, 56(t0)
    lw tp, 60(t0)
    ret

/* U-mode bodies. u_work sums 1..100 through the stack, then ecalls with the result. */
    .globl u_work, u_work_ecall
u_work:
    li t0, 100
    li a0, 0
1:  addi sp, sp, -4
    sw t0, 0(sp)
    lw t1, 0(sp)
    addi sp, sp, 4
    add a0, a0, t1
    addi t0, t0, -1
    bnez t0, 1b
u_work_ecall:
    ecall
    j u_work_ecall                 /* never returns here */

    .globl u_ebreak, u_ebreak_at
u_ebreak:
u_ebreak_at:
    ebreak
    j u_ebreak

    .globl u_mret, u_mret_at
u_mret:
u_mret_at:
    mret                           /* privileged: illegal in U-mode */
    j u_mret

    .globl u_csr, u_csr_at
u_csr:
u_csr_at:
    csrr a0, mstatus               /* M-mode CSR: illegal in U-mode */
    j u_csr

    .globl u_cycle, u_cycle_at
u_cycle:
u_cycle_at:
    csrr a0, cycle                 /* mcounteren.CY = 0: illegal in U-mode */
    j u_cycle

    .bss
    .align 4
user_ctx:
    .space 64
    .space 2048
user_stack_top:
    .globl vector_hit
vector_hit:
    .space 4
