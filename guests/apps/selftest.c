/* selftest: exercises the ISA and the trap machinery and prints what it saw. Every value printed
 * is fixed by the RISC-V specification (implementation-defined details are only checked, never
 * printed), so QEMU and tern must produce byte-identical output. */
#include "runtime.h"

static uint32_t checks, failures;

static void check(const char *what, uint32_t got, uint32_t want)
{
    checks++;
    if (got == want) {
        printf("ok   %-50s %08x\n", what, got);
    } else {
        failures++;
        printf("FAIL %-50s %08x (want %08x)\n", what, got, want);
    }
}

static void check_that(const char *what, int cond)
{
    checks++;
    if (!cond)
        failures++;
    printf("%s %s\n", cond ? "ok  " : "FAIL", what);
}

static void section(const char *name) { printf("[%s]\n", name); }

/* ---------------- register-register instructions ---------------- */

#define RR(insn) static uint32_t op_##insn(uint32_t a, uint32_t b) \
    { uint32_t r; __asm__ volatile(#insn " %0, %1, %2" : "=r"(r) : "r"(a), "r"(b)); return r; }
RR(add) RR(sub) RR(slt) RR(sltu) RR(sll) RR(srl) RR(sra)
RR(mul) RR(mulh) RR(mulhsu) RR(mulhu) RR(div) RR(divu) RR(rem) RR(remu)

static const struct { const char *name; uint32_t (*op)(uint32_t, uint32_t); uint32_t a, b, want; } rr_cases[] = {
    { "add", op_add, 0x7fffffff, 0x00000001, 0x80000000 },
    { "sub", op_sub, 0x00000000, 0x00000001, 0xffffffff },
    { "slt", op_slt, 0xffffffff, 0x00000001, 0x00000001 },
    { "sltu", op_sltu, 0xffffffff, 0x00000001, 0x00000000 },
    { "sll", op_sll, 0x00000001, 0x0000001f, 0x80000000 },
    { "sll", op_sll, 0x00000001, 0x00000020, 0x00000001 },
    { "sll", op_sll, 0x00000001, 0x00000021, 0x00000002 },
    { "srl", op_srl, 0x80000000, 0x0000001f, 0x00000001 },
    { "srl", op_srl, 0xf0000000, 0x00000024, 0x0f000000 },
    { "sra", op_sra, 0x80000000, 0x0000001f, 0xffffffff },
    { "sra", op_sra, 0x80000000, 0x0000003f, 0xffffffff },
    { "sra", op_sra, 0x7fffffff, 0x0000001e, 0x00000001 },
    { "mul", op_mul, 0x80000000, 0xffffffff, 0x80000000 },
    { "mul", op_mul, 0x12345678, 0x9abcdef0, 0x242d2080 },
    { "mulh", op_mulh, 0x80000000, 0x80000000, 0x40000000 },
    { "mulh", op_mulh, 0xffffffff, 0xffffffff, 0x00000000 },
    { "mulh", op_mulh, 0x80000000, 0x7fffffff, 0xc0000000 },
    { "mulh", op_mulh, 0x12345678, 0x9abcdef0, 0xf8cc93d6 },
    { "mulhsu", op_mulhsu, 0xffffffff, 0xffffffff, 0xffffffff },
    { "mulhsu", op_mulhsu, 0x80000000, 0xffffffff, 0x80000000 },
    { "mulhsu", op_mulhsu, 0x7fffffff, 0xffffffff, 0x7ffffffe },
    { "mulhsu", op_mulhsu, 0x12345678, 0x9abcdef0, 0x0b00ea4e },
    { "mulhu", op_mulhu, 0xffffffff, 0xffffffff, 0xfffffffe },
    { "mulhu", op_mulhu, 0x80000000, 0x00000002, 0x00000001 },
    { "mulhu", op_mulhu, 0x12345678, 0x9abcdef0, 0x0b00ea4e },
    { "div", op_div, 0x00000007, 0x00000002, 0x00000003 },
    { "div", op_div, 0xfffffff9, 0x00000002, 0xfffffffd },
    { "div", op_div, 0x00000007, 0xfffffffe, 0xfffffffd },
    { "div", op_div, 0xfffffff9, 0xfffffffe, 0x00000003 },
    { "div", op_div, 0x00001234, 0x00000000, 0xffffffff },
    { "div", op_div, 0x80000000, 0xffffffff, 0x80000000 },
    { "divu", op_divu, 0x00000007, 0x00000000, 0xffffffff },
    { "divu", op_divu, 0xffffffff, 0x00000002, 0x7fffffff },
    { "divu", op_divu, 0x80000000, 0xffffffff, 0x00000000 },
    { "rem", op_rem, 0xfffffff9, 0x00000002, 0xffffffff },
    { "rem", op_rem, 0x00000007, 0xfffffffe, 0x00000001 },
    { "rem", op_rem, 0x00001234, 0x00000000, 0x00001234 },
    { "rem", op_rem, 0x80000000, 0xffffffff, 0x00000000 },
    { "rem", op_rem, 0xfffffff9, 0x00000000, 0xfffffff9 },
    { "remu", op_remu, 0x00000007, 0x00000000, 0x00000007 },
    { "remu", op_remu, 0xffffffff, 0x0000000a, 0x00000005 },
    { "remu", op_remu, 0x80000000, 0xffffffff, 0x80000000 },
};

static void test_alu(void)
{
    char name[64];
    section("integer and M extension");
    for (unsigned i = 0; i < sizeof rr_cases / sizeof rr_cases[0]; i++) {
        uint32_t got = rr_cases[i].op(rr_cases[i].a, rr_cases[i].b);
        /* the name is built by hand: no snprintf in this runtime */
        char *p = name;
        for (const char *s = rr_cases[i].name; *s; s++) *p++ = *s;
        *p++ = ' ';
        for (int k = 0; k < 2; k++) {
            uint32_t v = k ? rr_cases[i].b : rr_cases[i].a;
            for (int d = 28; d >= 0; d -= 4) *p++ = "0123456789abcdef"[(v >> d) & 15];
            if (!k) { *p++ = ','; *p++ = ' '; }
        }
        *p = 0;
        check(name, got, rr_cases[i].want);
    }

    uint32_t r;
    __asm__ volatile("srai %0, %1, 4" : "=r"(r) : "r"(0x80000000u)); check("srai 80000000, 4", r, 0xf8000000);
    __asm__ volatile("srli %0, %1, 4" : "=r"(r) : "r"(0x80000000u)); check("srli 80000000, 4", r, 0x08000000);
    __asm__ volatile("slli %0, %1, 31" : "=r"(r) : "r"(3)); check("slli 3, 31", r, 0x80000000);
    __asm__ volatile("sltiu %0, %1, -1" : "=r"(r) : "r"(5)); check("sltiu 5, -1 (immediate is 0xffffffff)", r, 1);
    __asm__ volatile("slti %0, %1, -1" : "=r"(r) : "r"(5)); check("slti 5, -1", r, 0);
    __asm__ volatile("xori %0, %1, -1" : "=r"(r) : "r"(0x0f0f0f0fu)); check("xori 0f0f0f0f, -1", r, 0xf0f0f0f0);
    __asm__ volatile("lui %0, 0xfffff" : "=r"(r)); check("lui 0xfffff", r, 0xfffff000);
    __asm__ volatile("addi x0, x0, 5\n\tmv %0, x0" : "=r"(r)); check("addi x0, x0, 5 leaves x0 = 0", r, 0);

#define BRANCH(insn, a, b) ({ uint32_t t_; __asm__ volatile(#insn " %1, %2, 1f\n\tli %0, 0\n\tj 2f\n1:\tli %0, 1\n2:" \
    : "=r"(t_) : "r"(a), "r"(b)); t_; })
    uint32_t m1 = 0xffffffff, one = 1;
    check("blt -1, 1 taken", BRANCH(blt, m1, one), 1);
    check("bltu ffffffff, 1 not taken", BRANCH(bltu, m1, one), 0);
    check("bge 1, -1 taken", BRANCH(bge, one, m1), 1);
    check("bgeu 1, ffffffff not taken", BRANCH(bgeu, one, m1), 0);
    check("beq/bne", BRANCH(beq, one, one) << 1 | BRANCH(bne, one, one), 2);

    extern uint32_t t_jalr_odd(void), t_jal_link(void), t_auipc(void);
    check("jalr to target+1 lands on target", t_jalr_odd(), 1);
    check("jal link = pc + 4", t_jal_link(), 4);
    check("auipc 0 = own address", t_auipc(), 0);
}

/* ---------------- loads and stores ---------------- */

static void test_memory(void)
{
    static volatile uint8_t bytes[8] __attribute__((aligned(8))) = { 0x80, 0x7f, 0xff, 0x01, 0x00, 0x80, 0xff, 0x7f };
    static volatile uint32_t word __attribute__((aligned(4)));
    uint32_t r;
    section("loads and stores");
    __asm__ volatile("lb %0, 0(%1)" : "=r"(r) : "r"(bytes)); check("lb 0x80", r, 0xffffff80);
    __asm__ volatile("lbu %0, 0(%1)" : "=r"(r) : "r"(bytes)); check("lbu 0x80", r, 0x00000080);
    __asm__ volatile("lh %0, 0(%1)" : "=r"(r) : "r"(bytes)); check("lh 0x7f80", r, 0x00007f80);
    __asm__ volatile("lh %0, 4(%1)" : "=r"(r) : "r"(bytes)); check("lh 0x8000", r, 0xffff8000);
    __asm__ volatile("lhu %0, 4(%1)" : "=r"(r) : "r"(bytes)); check("lhu 0x8000", r, 0x00008000);
    __asm__ volatile("lw %0, 4(%1)" : "=r"(r) : "r"(bytes)); check("lw (little-endian)", r, 0x7fff8000);
    word = 0x11223344;
    __asm__ volatile("sb %0, 1(%1)" : : "r"(0xaau), "r"(&word) : "memory"); check("sb into byte 1", word, 0x1122aa44);
    __asm__ volatile("sh %0, 2(%1)" : : "r"(0x1234beefu), "r"(&word) : "memory"); check("sh into half 1", word, 0xbeefaa44);
    __asm__ volatile("fence rw, rw\n\tfence.i" : : : "memory");
    check_that("fence and fence.i execute", 1);

    /* fence.i makes a store to code visible to instruction fetch */
    extern uint32_t smc_insn[];
    extern uint32_t smc_func(void);
    uint32_t before = smc_func();
    smc_insn[0] = 0x00200513;       /* li a0, 2 */
    __asm__ volatile("fence.i" : : : "memory");
    uint32_t after = smc_func();
    smc_insn[0] = 0x00100513;       /* li a0, 1 */
    __asm__ volatile("fence.i" : : : "memory");
    check("self-modified code before/after fence.i", before << 4 | after, 0x12);
}

/* ---------------- A extension ---------------- */

#define AMO(insn) static uint32_t amo_##insn(volatile uint32_t *p, uint32_t v) \
    { uint32_t r; __asm__ volatile(#insn ".w %0, %2, (%1)" : "=r"(r) : "r"(p), "r"(v) : "memory"); return r; }
AMO(amoswap) AMO(amoadd) AMO(amoxor) AMO(amoand) AMO(amoor) AMO(amomin) AMO(amomax) AMO(amominu) AMO(amomaxu)

static void test_atomics(void)
{
    static const struct { const char *name; uint32_t (*op)(volatile uint32_t *, uint32_t); uint32_t want; } amos[] = {
        { "amoswap.w", amo_amoswap, 0x00000005 }, { "amoadd.w", amo_amoadd, 0x80000006 },
        { "amoxor.w", amo_amoxor, 0x80000004 }, { "amoand.w", amo_amoand, 0x00000001 },
        { "amoor.w", amo_amoor, 0x80000005 }, { "amomin.w", amo_amomin, 0x80000001 },
        { "amomax.w", amo_amomax, 0x00000005 }, { "amominu.w", amo_amominu, 0x00000005 },
        { "amomaxu.w", amo_amomaxu, 0x80000001 },
    };
    static volatile uint32_t cell[2048] __attribute__((aligned(4096)));   /* two pages */
    section("atomics: memory 80000001, operand 00000005, memory after");
    for (unsigned i = 0; i < sizeof amos / sizeof amos[0]; i++) {
        cell[0] = 0x80000001;
        uint32_t old = amos[i].op(&cell[0], 5);
        if (old != 0x80000001)
            check("  returns the old value", old, 0x80000001);   /* printed only on failure */
        check(amos[i].name, cell[0], amos[i].want);
    }

    uint32_t rc, v;
    volatile uint32_t *a = &cell[0], *b = &cell[1024];
    *a = 7;
    __asm__ volatile("lr.w %0, (%2)\n\taddi %0, %0, 1\n\tsc.w %1, %0, (%2)" : "=&r"(v), "=&r"(rc) : "r"(a) : "memory");
    check("lr.w/sc.w: sc result", rc, 0);
    check("lr.w/sc.w: memory", *a, 8);
    __asm__ volatile("sc.w %0, %1, (%2)" : "=&r"(rc) : "r"(99), "r"(a) : "memory");
    check_that("sc.w after sc.w (no reservation) fails", rc != 0);
    check("sc.w after sc.w leaves memory", *a, 8);
    *b = 3;
    __asm__ volatile("lr.w %0, (%2)\n\tsc.w %1, %3, (%4)" : "=&r"(v), "=&r"(rc) : "r"(a), "r"(42), "r"(b) : "memory");
    check_that("sc.w to another page than lr.w fails", rc != 0);
    check("sc.w to another page leaves memory", *b, 3);
}

/* ---------------- traps ---------------- */

static volatile struct {
    uint32_t count, mcause, mepc, mtval, mstatus, a0;
    uint64_t time;
} seen;
static volatile uint32_t resume_at;             /* 0: continue at mepc + 4 */
extern volatile uint32_t vector_hit;
extern void user_return(void);
extern uint32_t run_user(void (*fn)(void));

static int selftest_hook(struct trap_frame *f)
{
    uint32_t cause = f->mcause;
    seen.count++;
    seen.mcause = cause;
    seen.mepc = f->mepc;
    seen.mtval = f->mtval;
    seen.mstatus = f->mstatus;
    seen.a0 = f->x[10];
    if (cause & MCAUSE_INTR) {
        seen.time = time_now();
        switch (cause & ~MCAUSE_INTR) {
        case IRQ_M_TIMER: timer_disarm(); break;
        case IRQ_M_SOFT: mmio_write32(CLINT_MSIP, 0); break;
        case IRQ_M_EXT: {
            uint32_t src = mmio_read32(PLIC_CLAIM);
            seen.mtval = src;                                       /* reuse: claimed source */
            seen.a0 = mmio_read8(UART_BASE + UART_IIR);             /* reuse: IIR */
            mmio_write8(UART_BASE + UART_IER, UART_IER_RDI);        /* THRE interrupt off */
            mmio_write32(PLIC_CLAIM, src);
            break;
        }
        }
        return 1;
    }
    if ((f->mstatus & MSTATUS_MPP) == 0) {
        /* from U-mode: end the visit, back to run_user's caller in M-mode */
        f->mepc = (uint32_t)user_return;
        f->mstatus |= MSTATUS_MPP;
        return 1;
    }
    if (cause == EXC_INSN_ACCESS)
        f->mepc = f->x[1];                  /* the jump's return address */
    else
        f->mepc = resume_at ? resume_at : f->mepc + 4;
    return 1;
}

static void expect(const char *what, uint32_t cause, uint32_t label)
{
    char buf[96];
    char *p = buf;
    for (const char *s = what; *s; s++) *p++ = *s;
    const char *suffix[] = { ": traps once", ": mcause", ": mepc - label" };
    uint32_t got[] = { seen.count, seen.mcause, seen.mepc - label };
    uint32_t want[] = { 1, cause, 0 };
    for (int i = 0; i < 3; i++) {
        char *q = p;
        for (const char *s = suffix[i]; *s; s++) *q++ = *s;
        *q = 0;
        check(buf, got[i], want[i]);
    }
}

static void reset_seen(void)
{
    seen.count = seen.mcause = seen.mepc = seen.mtval = seen.mstatus = seen.a0 = 0;
    resume_at = 0;
}

extern void t_illegal_zero(void), t_csrw_readonly(void), t_ebreak(void), t_ecall(void), t_jump(uint32_t);
extern uint32_t t_load(uint32_t), t_store(uint32_t), t_mret_m(void);
extern char t_illegal_zero_at[], t_csrw_readonly_at[], t_ebreak_at[], t_ecall_at[], t_load_at[], t_store_at[];

static void test_exceptions(void)
{
    section("exceptions in M-mode");
    reset_seen();
    t_illegal_zero();
    expect("illegal (all-zero word)", EXC_ILLEGAL, (uint32_t)t_illegal_zero_at);
    check("illegal (all-zero word): mtval", seen.mtval, 0);

    reset_seen();
    t_csrw_readonly();
    expect("csrw to read-only mhartid", EXC_ILLEGAL, (uint32_t)t_csrw_readonly_at);
    check_that("csrw to read-only mhartid: mtval is 0 or the instruction", seen.mtval == 0 || seen.mtval == 0xf1401073);

    reset_seen();
    t_ebreak();
    expect("ebreak", EXC_BREAKPOINT, (uint32_t)t_ebreak_at);
    check_that("ebreak: mtval is 0 or the pc", seen.mtval == 0 || seen.mtval == (uint32_t)t_ebreak_at);

    reset_seen();
    irq_enable();
    t_ecall();
    expect("ecall from M", EXC_ECALL_M, (uint32_t)t_ecall_at);
    check("ecall from M: mtval", seen.mtval, 0);
    check("ecall from M: mstatus MPP/MPIE/MIE on entry", seen.mstatus & (MSTATUS_MPP | MSTATUS_MPIE | MSTATUS_MIE),
          MSTATUS_MPP | MSTATUS_MPIE);
    check("ecall from M: MIE back on after mret", csr_read(mstatus) & MSTATUS_MIE, MSTATUS_MIE);

    irq_disable();
    check("mret with MPP=M, MPIE=0: MPP->U, MPIE->1, MIE->0",
          t_mret_m() & (MSTATUS_MPP | MSTATUS_MPIE | MSTATUS_MIE), MSTATUS_MPIE);
    irq_enable();

    static const uint32_t holes[] = { 0x00000000, 0x01000000 };
    for (int i = 0; i < 2; i++) {
        reset_seen();
        t_load(holes[i]);
        expect(i ? "load from unmapped 0x01000000" : "load from unmapped 0x00000000", EXC_LOAD_ACCESS, (uint32_t)t_load_at);
        check_that("  mtval is 0 or the address", seen.mtval == 0 || seen.mtval == holes[i]);
    }
    reset_seen();
    t_load(ram_base + ram_size);
    expect("load just past the end of RAM", EXC_LOAD_ACCESS, (uint32_t)t_load_at);
    check_that("  mtval is 0 or the address", seen.mtval == 0 || seen.mtval == ram_base + ram_size);
    reset_seen();
    t_store(0x01000000);
    expect("store to unmapped 0x01000000", EXC_STORE_ACCESS, (uint32_t)t_store_at);
    check_that("  mtval is 0 or the address", seen.mtval == 0 || seen.mtval == 0x01000000);
    reset_seen();
    t_jump(0x01000000);
    expect("jump to unmapped 0x01000000", EXC_INSN_ACCESS, 0x01000000);
    check_that("  mtval is 0 or the address", seen.mtval == 0 || seen.mtval == 0x01000000);
}

extern void u_work(void), u_ebreak(void), u_mret(void), u_csr(void), u_cycle(void);
extern char u_work_ecall[], u_ebreak_at[], u_mret_at[], u_csr_at[], u_cycle_at[];

static void test_user_mode(void)
{
    section("U-mode");
    /* QEMU enforces PMP: one entry covering everything lets U-mode at all memory */
    csr_write(pmpaddr0, 0xffffffffu);
    csr_write(pmpcfg0, 0x1f);                   /* NAPOT, R W X */

    reset_seen();
    uint32_t r = run_user(u_work);
    expect("ecall from U", EXC_ECALL_U, (uint32_t)u_work_ecall);
    check("ecall from U: mtval", seen.mtval, 0);
    check("ecall from U: mstatus.MPP = U", seen.mstatus & MSTATUS_MPP, 0);
    check("U-mode computed sum 1..100 via its stack", r, 5050);

    static const struct { const char *name; void (*fn)(void); const char *at; uint32_t cause; } cases[] = {
        { "ebreak in U", u_ebreak, u_ebreak_at, EXC_BREAKPOINT },
        { "mret in U", u_mret, u_mret_at, EXC_ILLEGAL },
        { "csrr mstatus in U", u_csr, u_csr_at, EXC_ILLEGAL },
        { "rdcycle in U with mcounteren = 0", u_cycle, u_cycle_at, EXC_ILLEGAL },
    };
    csr_write(mcounteren, 0);
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reset_seen();
        run_user(cases[i].fn);
        expect(cases[i].name, cases[i].cause, (uint32_t)cases[i].at);
    }
    irq_enable();
}

/* ---------------- CSRs ---------------- */

static void test_csrs(void)
{
    section("CSRs");
    uint32_t misa = csr_read(misa);
    check("misa.MXL (1 = 32-bit)", misa >> 30, 1);
    check("misa I, M, A, U", misa & (1u << 8 | 1u << 12 | 1u << 0 | 1u << 20), 1u << 8 | 1u << 12 | 1u << 0 | 1u << 20);
    check("mhartid", csr_read(mhartid), 0);

    irq_disable();
    uint32_t saved = csr_swap(mscratch, 0xdeadbeefu);
    uint32_t v1 = csr_read(mscratch), v2, v3, v4;
    __asm__ volatile("csrrs %0, mscratch, %1" : "=r"(v2) : "r"(0x00000110u));
    __asm__ volatile("csrrc %0, mscratch, %1" : "=r"(v3) : "r"(0xde000000u));
    __asm__ volatile("csrrwi %0, mscratch, 0x15" : "=r"(v4));
    uint32_t v5 = csr_read(mscratch);
    __asm__ volatile("csrrsi x0, mscratch, 0x0a\n\tcsrrci x0, mscratch, 0x01");
    uint32_t v6 = csr_read(mscratch);
    csr_write(mscratch, saved);
    irq_enable();
    check("mscratch csrrw", v1, 0xdeadbeef);
    check("mscratch csrrs returns old", v2, 0xdeadbeef);
    check("mscratch csrrc returns old (after set)", v3, 0xdeadbfff);
    check("mscratch csrrwi returns old (after clear)", v4, 0x00adbfff);
    check("mscratch after csrrwi", v5, 0x15);
    check("mscratch after csrrsi/csrrci", v6, 0x1e);

    uint32_t old = csr_read(mepc);
    csr_write(mepc, 0x80001234u);
    check("mepc write/read (aligned)", csr_read(mepc), 0x80001234);
    csr_write(mepc, old);

    extern char trap_vector[], vector_table[];
    check("mtvec direct: reads back (minus trap_vector)", csr_read(mtvec) - (uint32_t)trap_vector, 0);

    irq_disable();
    uint32_t mie_saved = csr_read(mie);
    csr_write(mie, 0xffffffffu);
    uint32_t mie_all = csr_read(mie);
    csr_write(mie, 0);
    uint32_t mie_none = csr_read(mie);
    csr_write(mie, mie_saved);
    timer_disarm();
    csr_write(mip, 0xffffffffu);          /* MSIP/MTIP/MEIP are read-only in mip */
    uint32_t mip = csr_read(mip);
    irq_enable();
    check("mie: MSIE, MTIE, MEIE writable", mie_all & 0x888, 0x888);
    check("mie: cleared", mie_none & 0x888, 0);
    check("mip: M bits ignore csr writes", mip & 0x888, 0);

    uint32_t c0 = csr_read(mcycle), i0 = csr_read(minstret);
    for (volatile int i = 0; i < 1000; i++)
        ;
    uint32_t c1 = csr_read(mcycle), i1 = csr_read(minstret);
    (void)csr_read(mcycleh); (void)csr_read(minstreth);
    (void)csr_read(cycle); (void)csr_read(cycleh); (void)csr_read(instret); (void)csr_read(instreth);
    check_that("mcycle/minstret/cycle/instret and high halves readable", 1);
    check_that("mcycle advances", c1 != c0);
    check_that("minstret advances", i1 != i0);

    uint64_t t1 = time_now();
    uint32_t hi, lo;
    do {
        hi = csr_read(timeh);
        lo = csr_read(time);
    } while (csr_read(timeh) != hi);
    uint64_t t2 = (uint64_t)hi << 32 | lo, t3 = time_now();
    check_that("time CSR lies between two CLINT mtime reads", t1 <= t2 && t2 <= t3);
    check_that("mtime advances", time_now() > t1);

    irq_disable();
    csr_write(mtvec, (uint32_t)vector_table | 1);
    uint32_t vt = csr_read(mtvec);
    csr_write(mtvec, (uint32_t)trap_vector);
    irq_enable();
    check("mtvec vectored: reads back base | 1", vt - (uint32_t)vector_table, 1);
}

/* ---------------- interrupts ---------------- */

static void wait_for_trap(void)
{
    uint64_t give_up = time_now() + TIMEBASE_HZ;       /* one second */
    while (!seen.count && time_now() < give_up)
        ;
}

static void test_interrupts(void)
{
    section("interrupts");
    /* timer: pending is visible in mip with MIE off, wfi wakes, the trap comes with MIE on */
    irq_disable();
    reset_seen();
    uint64_t when = time_now() + 500000;                /* 50 ms: room for a busy host */
    timer_arm(when);
    uint32_t before = csr_read(mip) & MIP_MTIP;
    /* Only meaningful if mip was read before the deadline (QEMU's mtime follows host time). */
    if (time_now() >= when) before = 0;
    while (!(csr_read(mip) & MIP_MTIP) && time_now() < when + TIMEBASE_HZ)
        wfi();                      /* wakes on a pending enabled interrupt even with MIE = 0 */
    uint32_t pending = csr_read(mip) & MIP_MTIP;
    uint64_t woke = time_now();
    uint32_t taken_while_off = seen.count;
    irq_enable();
    wait_for_trap();
    check("timer: mip.MTIP clear before mtimecmp", before, 0);
    check("timer: mip.MTIP set after wfi", pending, MIP_MTIP);
    check_that("timer: not pending before mtimecmp", woke >= when);
    check("timer: no trap while mstatus.MIE = 0", taken_while_off, 0);
    check("timer: trap once MIE = 1", seen.count, 1);
    check("timer: mcause", seen.mcause, MCAUSE_INTR | IRQ_M_TIMER);
    check("timer: mip.MTIP clear after mtimecmp = max", csr_read(mip) & MIP_MTIP, 0);

    /* software interrupt through the CLINT msip register */
    irq_disable();
    reset_seen();
    csr_set(mie, MIP_MSIP);
    mmio_write32(CLINT_MSIP, 1);
    uint32_t msip = mmio_read32(CLINT_MSIP), mip_msip = csr_read(mip) & MIP_MSIP;
    irq_enable();
    wait_for_trap();
    csr_clear(mie, MIP_MSIP);
    check("msip: reads back 1", msip, 1);
    check("msip: mip.MSIP set", mip_msip, MIP_MSIP);
    check("msip: mcause", seen.mcause, MCAUSE_INTR | IRQ_M_SOFT);
    check("msip: cleared by writing 0", (mmio_read32(CLINT_MSIP) & 1) << 4 | (csr_read(mip) & MIP_MSIP), 0);

    /* external: the UART's transmitter-empty interrupt through the PLIC, polled first */
    irq_disable();
    reset_seen();
    mmio_write8(UART_BASE + UART_IER, UART_IER_RDI | UART_IER_THRI);
    uint32_t meip = csr_read(mip) & MIP_MEIP;
    uint32_t plic_pending = mmio_read32(PLIC_PENDING) >> UART_IRQ & 1;
    uint32_t claimed = mmio_read32(PLIC_CLAIM);
    uint32_t iir = mmio_read8(UART_BASE + UART_IIR);
    mmio_write8(UART_BASE + UART_IER, UART_IER_RDI);
    mmio_write32(PLIC_CLAIM, claimed);
    uint32_t meip_after = csr_read(mip) & MIP_MEIP;
    irq_enable();
    check("uart THRE irq: mip.MEIP set", meip, MIP_MEIP);
    check("uart THRE irq: PLIC pending bit 10", plic_pending, 1);
    check("uart THRE irq: claim", claimed, UART_IRQ);
    check("uart THRE irq: IIR id (THR empty)", iir & 0x0f, 0x02);
    check("uart THRE irq: mip.MEIP clear after complete", meip_after, 0);
    check("uart THRE irq: no trap while MIE = 0", seen.count, 0);

    /* ... then taken as a trap */
    reset_seen();
    mmio_write8(UART_BASE + UART_IER, UART_IER_RDI | UART_IER_THRI);
    wait_for_trap();
    check("uart THRE irq taken: mcause", seen.mcause, MCAUSE_INTR | IRQ_M_EXT);
    check("uart THRE irq taken: claimed source", seen.mtval, UART_IRQ);
    check("uart THRE irq taken: IIR id", seen.a0 & 0x0f, 0x02);

    /* vectored mtvec: interrupts go to base + 4 * cause, exceptions to base */
    extern char trap_vector[], vector_table[];
    irq_disable();
    csr_write(mtvec, (uint32_t)vector_table | 1);
    reset_seen();
    vector_hit = 99;
    csr_set(mie, MIP_MSIP);
    mmio_write32(CLINT_MSIP, 1);
    irq_enable();
    wait_for_trap();
    irq_disable();
    csr_clear(mie, MIP_MSIP);
    uint32_t soft_hit = vector_hit, soft_cause = seen.mcause;
    reset_seen();
    vector_hit = 99;
    timer_arm(time_now() + 1000);
    irq_enable();
    wait_for_trap();
    uint32_t timer_hit = vector_hit, timer_cause = seen.mcause;
    reset_seen();
    vector_hit = 99;
    t_ecall();
    uint32_t ecall_hit = vector_hit, ecall_cause = seen.mcause;
    irq_disable();
    csr_write(mtvec, (uint32_t)trap_vector);
    irq_enable();
    check("vectored: software interrupt entry", soft_hit, 3);
    check("vectored: software interrupt mcause", soft_cause, MCAUSE_INTR | IRQ_M_SOFT);
    check("vectored: timer interrupt entry", timer_hit, 7);
    check("vectored: timer interrupt mcause", timer_cause, MCAUSE_INTR | IRQ_M_TIMER);
    check("vectored: ecall entry (base)", ecall_hit, 0);
    check("vectored: ecall mcause", ecall_cause, EXC_ECALL_M);
}

/* ---------------- devices ---------------- */

static void test_devices(void)
{
    section("devices");
    mmio_write8(UART_BASE + UART_SCR, 0x5a);
    uint32_t a = mmio_read8(UART_BASE + UART_SCR);
    mmio_write8(UART_BASE + UART_SCR, 0xa5);
    uint32_t b = mmio_read8(UART_BASE + UART_SCR);
    check("uart scratch register", a << 8 | b, 0x5aa5);
    check("uart LCR reads back 8N1", mmio_read8(UART_BASE + UART_LCR), 0x03);
    check("uart IIR: no interrupt pending", mmio_read8(UART_BASE + UART_IIR) & 0x0f, 0x01);
    check("uart IER reads back", mmio_read8(UART_BASE + UART_IER), UART_IER_RDI);
    mmio_write32(PLIC_PRIORITY(UART_IRQ), 1);
    check("plic priority 10 reads back", mmio_read32(PLIC_PRIORITY(UART_IRQ)), 1);
    check("plic enable bit 10", mmio_read32(PLIC_ENABLE) >> UART_IRQ & 1, 1);
    check("plic threshold", mmio_read32(PLIC_THRESHOLD), 0);
    check("plic claim with nothing pending", mmio_read32(PLIC_CLAIM), 0);
    uint64_t cmp = 0x0123456789abcdefull;
    irq_disable();
    mmio_write32(CLINT_MTIMECMP + 4, 0x01234567);
    mmio_write32(CLINT_MTIMECMP, 0x89abcdef);
    uint64_t got = (uint64_t)mmio_read32(CLINT_MTIMECMP + 4) << 32 | mmio_read32(CLINT_MTIMECMP);
    timer_disarm();
    irq_enable();
    check("clint mtimecmp reads back (low)", (uint32_t)got, (uint32_t)cmp);
    check("clint mtimecmp reads back (high)", (uint32_t)(got >> 32), (uint32_t)(cmp >> 32));
}

int main(void)
{
    static const char *const known[] = { 0 };
    args_allow(known);
    printf("selftest: RV32IMA, M-mode and U-mode; every line below must start with \"ok\"\n");
    trap_hook = selftest_hook;
    test_alu();
    test_memory();
    test_atomics();
    test_csrs();
    test_exceptions();
    test_user_mode();
    test_interrupts();
    test_devices();
    trap_hook = 0;
    printf("selftest: %u checks, %u failed\n", checks, failures);
    return failures ? EXIT_CHECK_FAILED : 0;
}
