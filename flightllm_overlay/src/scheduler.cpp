// scheduler.cpp: the scheduler kernel: image fetch and checks, dispatch of each core's instructions over its cmd stream under the program-order token check, SYS fences and barriers across cores, status and errors.
//
// Semantics: docs/isa.md sections 1, 3, 5 (SYS), 6 and 7; reference: FunctionalSimulator.run and
// decode_image in sim/functional.py and isa.decode_one.  Errors carry the same code, core and pc
// (word offset in the core's stream) as the Python simulator's exceptions.  Protocol with the
// cores: docs/hls_kernels.md.
#include "flightllm_kernels.h"

#ifndef __SYNTHESIS__
#include <cstring>
#endif

// Every format starts with opcode, wait, release at the same offsets.
static_assert(FLLM_LD_WAIT_OFF == FLLM_SYS_WAIT_OFF && FLLM_MM_WAIT_OFF == FLLM_MISC_WAIT_OFF &&
              FLLM_LD_RELEASE_OFF == FLLM_SYS_RELEASE_OFF && FLLM_MM_RELEASE_OFF == FLLM_MISC_RELEASE_OFF &&
              FLLM_LD_WAIT_OFF == FLLM_MM_WAIT_OFF && FLLM_LD_RELEASE_OFF == FLLM_MM_RELEASE_OFF,
              "the common header fields moved");

static inline unsigned wait_of(const insn_bits_t& b) { return FLLM_GET(b, LD, WAIT); }
static inline unsigned release_of(const insn_bits_t& b) { return FLLM_GET(b, LD, RELEASE); }
static inline unsigned opcode_of(const insn_bits_t& b) { return FLLM_GET(b, LD, OPCODE); }

// ---------------------------------------------------------------------------------------------
// Instruction fetch and the decode-time checks (isa.decode_one, isa._check_semantics)
// ---------------------------------------------------------------------------------------------
// Assemble the instruction at word `pc` of a stream of `n` words at `stream`.  0 or ILLEGAL.
static unsigned fetch(const word_t* stream, uint64_t n, uint64_t pc, insn_bits_t& bits, unsigned& words) {
#pragma HLS INLINE off
    unsigned opcode = stream[pc] & 0xF;
    words = FLLM_WORDS_OF_OPCODE[opcode];
    if (words == 0)
        FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "word %llu: 0x%08x has opcode 0x%x, which is not in the ISA",
                  (unsigned long long)pc, (unsigned)stream[pc], opcode);
    if (pc + words > n)
        FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "word %llu: the instruction needs %u words but the stream "
                  "has only %llu left", (unsigned long long)pc, words, (unsigned long long)(n - pc));
    bits = 0;
FETCH:
    for (unsigned i = 0; i < FLLM_MAX_INSN_WORDS; i++) {
#pragma HLS PIPELINE II = 1
        if (i < words) bits.range(32 * i + 31, 32 * i) = stream[pc + i];
    }
    return 0;
}

static unsigned format_bits(unsigned opcode) {
    switch (opcode) {
        case FLLM_OPCODE_LD: return FLLM_LD_BITS;
        case FLLM_OPCODE_ST: return FLLM_ST_BITS;
        case FLLM_OPCODE_MM: return FLLM_MM_BITS;
        case FLLM_OPCODE_MV: return FLLM_MV_BITS;
        case FLLM_OPCODE_MISC: return FLLM_MISC_BITS;
        default: return FLLM_SYS_BITS;
    }
}

static unsigned check_insn(const insn_bits_t& b, unsigned words) {
    unsigned opcode = opcode_of(b);
    unsigned nbits = format_bits(opcode);
    if (nbits < 32 * words && b.range(32 * words - 1, nbits) != 0)
        FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "opcode 0x%x has non-zero reserved bits", opcode);
    unsigned own = 1u << FLLM_UNIT_OF_OPCODE[opcode];
    if ((wait_of(b) & own) || (release_of(b) & own))
        FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "opcode 0x%x waits on or releases to its own queue", opcode);
    if (opcode == FLLM_OPCODE_LD || opcode == FLLM_OPCODE_ST) {
        MoveFields f = fllm_decode_move(b);
        if (f.buf >= FLLM_NUM_BUFFERS || f.dyn >= FLLM_NUM_DYNS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "buf=%u / dyn=%u is not a legal value", f.buf, f.dyn);
        if (opcode == FLLM_OPCODE_ST && f.remote)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "ST cannot target a remote core");
        if (opcode == FLLM_OPCODE_LD && f.wfmt >= FLLM_NUM_WFMTS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "wfmt=%u is not a legal value", f.wfmt);
        if (f.wfmt && (opcode == FLLM_OPCODE_ST || f.remote || f.buf != FLLM_BUF_WBUF ||
                       f.dyn != FLLM_DYN_STATIC))
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "wfmt=%u: dequantising loads are static LDs of weight "
                      "rows into the weight buffer", f.wfmt);
        if (f.wfmt && FLLM_WEIGHT_BITS[f.wbits] < 8 && f.wk % FLLM_WEIGHT_GROUPS[f.wgroup])
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "LD of %u-bit weights: wk=%u is not a whole number of "
                      "groups of %u", FLLM_WEIGHT_BITS[f.wbits], f.wk, FLLM_WEIGHT_GROUPS[f.wgroup]);
        if (f.wfmt && f.sparse && (f.rows % FLLM_SPARSE_BLOCK || f.wk % FLLM_SPARSE_BLOCK))
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "sparse LD: rows=%u and wk=%u must be multiples of %u "
                      "(whole N:16 blocks)", f.rows, f.wk, FLLM_SPARSE_BLOCK);
        if (f.wcodes && (!f.wfmt || FLLM_WEIGHT_BITS[f.wbits] == 8 || f.sparse))
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "wcodes=1: only a dequantising LD of a dense tile below 8 bits "
                      "passes its codes to the MPE (wfmt=%u, %u-bit, sparse=%u)", f.wfmt,
                      FLLM_WEIGHT_BITS[f.wbits], f.sparse);
        if (f.stripe && (opcode == FLLM_OPCODE_ST || f.remote ||
                         (f.stripe > 1 && ((f.rows > 1 && !f.wfmt) || f.row_bytes % f.stripe))))
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "stripe=%u: striping is for LD of one contiguous row "
                      "whose length divides into `stripe` chunks", f.stripe);
    } else if (opcode == FLLM_OPCODE_MM || opcode == FLLM_OPCODE_MV) {
        MatFields f = fllm_decode_mat(b);
        if (f.sparse && (f.wt || f.n % FLLM_SPARSE_BLOCK || f.k % FLLM_SPARSE_BLOCK || f.dyn_n || f.dyn_k ||
                         f.w_stride))
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "sparse MM/MV: weights are whole 16x16 blocks in the packed "
                      "order (n and k multiples of %u, no wt, no dynamic n/k, w_stride 0)", FLLM_SPARSE_BLOCK);
        if (opcode == FLLM_OPCODE_MV && f.m > FLLM_MV_MAX_ROWS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MV handles at most %u rows", FLLM_MV_MAX_ROWS);
        const unsigned G = FLLM_ACT_GROUPS[f.agroup];
        if (G && (f.k % G || f.dyn_k || f.dyn_n))
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MM/MV with agroup=%u: k=%u must be a whole number of "
                      "groups of %u and static", f.agroup, f.k, G);
        if (f.wcodes > FLLM_NUM_WEIGHT_GROUPS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "wcodes=%u is not a legal value", f.wcodes);
        if (f.wcodes) {     // dense (N, K) rows of whole groups, each followed by its (M, B)
            const unsigned GW = FLLM_WEIGHT_GROUPS[f.wcodes - 1];
            if (f.sparse || f.wt || f.dyn_n || f.dyn_k || f.k % GW ||
                (f.w_stride && f.w_stride < f.k + 4 * (f.k / GW)))
                FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MM/MV with wcodes (groups of %u): dense rows of whole "
                          "groups, static n and k (k=%u, w_stride=%u)", GW, f.k, f.w_stride);
        }
    } else if (opcode == FLLM_OPCODE_MISC) {
        if (FLLM_GET(b, MISC, OP) >= FLLM_NUM_MISC_OPS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MISC op is not a legal value");
        MiscFields f = fllm_decode_misc(b);
        const unsigned G = FLLM_ACT_GROUPS[f.agroup];
        if (G && (f.op != FLLM_MISC_OP_QUANT || f.given_max || f.diffuse || f.residual || f.k % G || f.dyn_k))
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MISC with agroup=%u: only a quant of whole groups of %u "
                      "(static k; not with given_max, diffuse or residual)", f.agroup, G);
    } else if (opcode == FLLM_OPCODE_SYS) {
        if (FLLM_GET(b, SYS, OP) >= FLLM_NUM_SYS_OPS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "SYS op is not a legal value");
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The whole run
// ---------------------------------------------------------------------------------------------
struct ImageTable {
    uint64_t off[FLLM_CORES], n[FLLM_CORES], last_pc[FLLM_CORES];
};

struct RunError {
    unsigned code, core, pc;
};

static RunError ok() { return RunError{FLLM_ERR_NONE, FLLM_UNKNOWN, FLLM_UNKNOWN}; }
static RunError fail(unsigned code, unsigned core, unsigned pc) { return RunError{code, core, pc}; }

// Image header and every stream's decode-time checks (functional.py decode_image).
static RunError load_image(const word_t* program, uint64_t words, ImageTable& t) {
    if (words < FLLM_IMAGE_HEADER_WORDS || program[0] != FLLM_IMAGE_MAGIC) {
#ifndef __SYNTHESIS__
        std::snprintf(fllm_error_message, sizeof(fllm_error_message), "no instruction image at this address");
#endif
        return fail(FLLM_ERR_ILLEGAL_INSTRUCTION, FLLM_UNKNOWN, FLLM_UNKNOWN);
    }
    uint64_t total = program[3];
    uint64_t limit = total > FLLM_IMAGE_HEADER_WORDS ? total : FLLM_IMAGE_HEADER_WORDS;
    unsigned ncores = program[2];
#ifndef __SYNTHESIS__
    std::snprintf(fllm_error_message, sizeof(fllm_error_message), "bad instruction image header");
#endif
    if (program[1] != FLLM_IMAGE_VERSION || limit > words ||
        limit < FLLM_IMAGE_HEADER_WORDS + 2 * (uint64_t)ncores)
        return fail(FLLM_ERR_ILLEGAL_INSTRUCTION, FLLM_UNKNOWN, FLLM_UNKNOWN);
HEADER_CORES:
    for (unsigned c = 0; c < ncores; c++) {
#pragma HLS LOOP_TRIPCOUNT max = 3
        uint64_t off = program[FLLM_IMAGE_HEADER_WORDS + 2 * c], n = program[FLLM_IMAGE_HEADER_WORDS + 2 * c + 1];
        if (off + n > total) return fail(FLLM_ERR_ILLEGAL_INSTRUCTION, FLLM_UNKNOWN, FLLM_UNKNOWN);
    }
    if (ncores != FLLM_CORES) {
#ifndef __SYNTHESIS__
        std::snprintf(fllm_error_message, sizeof(fllm_error_message),
                      "the program was compiled for %u cores; the target has %u", ncores, FLLM_CORES);
#endif
        return fail(FLLM_ERR_PROGRAM, FLLM_UNKNOWN, FLLM_UNKNOWN);
    }
CHECK_STREAMS:
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        t.off[c] = program[FLLM_IMAGE_HEADER_WORDS + 2 * c];
        t.n[c] = program[FLLM_IMAGE_HEADER_WORDS + 2 * c + 1];
        const word_t* s = program + t.off[c];
        uint64_t pc = 0, last = 0;
        bool ends = false;
    CHECK_WORDS:
        while (pc < t.n[c]) {
#pragma HLS LOOP_TRIPCOUNT max = 1048576
            insn_bits_t b;
            unsigned w;
            unsigned err = fetch(s, t.n[c], pc, b, w);
            if (!err) err = check_insn(b, w);
            if (err) return fail(err, c, (unsigned)pc);
            last = pc;
            ends = opcode_of(b) == FLLM_OPCODE_SYS && FLLM_GET(b, SYS, OP) == FLLM_SYS_OP_END;
            pc += w;
        }
        t.last_pc[c] = last;
        if (!ends) {
#ifndef __SYNTHESIS__
            std::snprintf(fllm_error_message, sizeof(fllm_error_message),
                          "core %u's stream does not end with SYS end", c);
#endif
            return fail(FLLM_ERR_PROGRAM, c, (unsigned)t.n[c]);
        }
    }
    return ok();
}


// ---------------------------------------------------------------------------------------------
// The links to the cores: one explicit path per core
// ---------------------------------------------------------------------------------------------
#define LINK_PARAMS fllm_link_t &cmd0, fllm_link_t &cmd1, fllm_link_t &cmd2, fllm_link_t &done0, \
                    fllm_link_t &done1, fllm_link_t &done2
#define LINK_ARGS cmd0, cmd1, cmd2, done0, done1, done2

static void send(unsigned c, const fllm_beat_t& b, LINK_PARAMS) {
    (void)done0; (void)done1; (void)done2;
    if (c == 0) cmd0.write(b);
    else if (c == 1) cmd1.write(b);
    else cmd2.write(b);
}

static bool poll(unsigned c, fllm_beat_t& b, LINK_PARAMS) {
    (void)cmd0; (void)cmd1; (void)cmd2;
    if (c == 0) return done0.read_nb(b);
    if (c == 1) return done1.read_nb(b);
    return done2.read_nb(b);
}

struct Regs {            // the status registers, written as the run goes (the host may poll them)
    unsigned* status;
    unsigned* error_code;
    unsigned* error_core;
};

// Wait for core c's next answer of `kind`.  A watchdog: after FLLM_STALL_POLLS empty polls the
// status says STALLED (UNIT_NOT_STARTED on core c) and the wait goes on; an answer puts RUNNING back.
static fllm_beat_t answer_of(unsigned c, unsigned kind, const Regs& regs, LINK_PARAMS) {
#ifdef __SYNTHESIS__
    const uint32_t limit = FLLM_STALL_POLLS;
#else
    const uint32_t limit = fllm_csim_stall_polls;
#endif
    uint32_t polls = 0;
    bool stalled = false;
WATCHDOG:
    while (true) {           // ends on the answer; never on an empty poll
#pragma HLS LOOP_TRIPCOUNT max = 268435456
        fllm_beat_t b;
        if (poll(c, b, LINK_ARGS)) {
            if (stalled) {
                *regs.status = FLLM_STATUS_RUNNING;
                *regs.error_code = FLLM_ERR_NONE;
                *regs.error_core = 0;
            }
            if (fllm_kind(b) == kind) return b;
            continue;        // a HELLO left over from a start without a run
        }
        if (!stalled && ++polls >= limit) {
            stalled = true;
            *regs.status = FLLM_STATUS_STALLED;
            *regs.error_code = FLLM_ERR_UNIT_NOT_STARTED;
            *regs.error_core = c;
        }
#ifndef __SYNTHESIS__
        fllm_csim_idle();
#endif
    }
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------
struct CoreProgress {        // one core's place in its stream
    uint64_t pc;
    unsigned pending[FLLM_NUM_UNITS][FLLM_NUM_UNITS];   // program-order token counts
    unsigned err;
    uint32_t err_pc;
    bool dispatch_error;
    insn_bits_t sys;
    uint32_t sys_pc;
    uint64_t executed;       // instructions the core has executed this run (from FENCED)
    uint64_t leftover;       // tokens left at its last fence ([src*6+dst] bits)
#ifndef __SYNTHESIS__
    char dispatch_message[512];
#endif
};

static void take_fenced(CoreProgress& p, const fllm_beat_t& a) {
    const unsigned err = a.data.range(7, 0).to_uint();
    const uint32_t pc = fllm_u32_at(a, 4);
    if (err != FLLM_ERR_NONE && (p.err == FLLM_ERR_NONE || pc < p.err_pc)) {
        p.err = err;
        p.err_pc = pc;
        p.dispatch_error = false;
    }
    p.executed = fllm_u32_at(a, 8);
    p.leftover = fllm_u64_at(a, 16);
}

// Dispatch core c's instructions up to its next SYS, then a FENCE (carrying the SYS's wait
// mask).  With fence_each, a FENCE after every instruction, stopping at the first error.
static void dispatch_phase(const word_t* program, const ImageTable& t, unsigned c, CoreProgress& p,
                           bool fence_each, const Regs& regs, LINK_PARAMS) {
    const word_t* s = program + t.off[c];
    p.err = FLLM_ERR_NONE;
    p.err_pc = FLLM_UNKNOWN;
    p.dispatch_error = false;
    p.sys = 0;
    p.sys_pc = FLLM_UNKNOWN;
    bool has_sys = false;
DISPATCH:
    while (p.pc < t.n[c]) {
#pragma HLS LOOP_TRIPCOUNT max = 1048576
        insn_bits_t b;
        unsigned w;
        fetch(s, t.n[c], p.pc, b, w);                     // checked by load_image
        const unsigned unit = FLLM_UNIT_OF_OPCODE[opcode_of(b)];
        const unsigned wait = wait_of(b), rel = release_of(b);
        bool ok = true;
    PENDING:
        for (unsigned u = 0; u < FLLM_NUM_UNITS; u++) {
            if (!(wait >> u & 1) || !ok) continue;
            if (p.pending[u][unit] == 0) {
                ok = false;
#ifndef __SYNTHESIS__
                std::snprintf(p.dispatch_message, sizeof(p.dispatch_message),
                              "waits for a token from unit %u that no earlier instruction released (the "
                              "program order is not a valid schedule)", u);
#endif
            } else {
                p.pending[u][unit]--;
            }
        }
        if (!ok) {
            p.err = FLLM_ERR_PROGRAM;
            p.err_pc = (uint32_t)p.pc;
            p.dispatch_error = true;
            break;
        }
        if (unit == FLLM_UNIT_SYS) {
            p.sys = b;
            p.sys_pc = (uint32_t)p.pc;
            p.pc += w;
            has_sys = true;
            break;
        }
        for (unsigned u = 0; u < FLLM_NUM_UNITS; u++)
            if (rel >> u & 1) p.pending[unit][u]++;
        fllm_beat_t cmd = fllm_header(FLLM_KIND_INSN);
        cmd.data.range(32 * FLLM_MAX_INSN_WORDS - 1, 0) = b;
        fllm_put_u32(cmd, 40, (uint32_t)p.pc);
        send(c, cmd, LINK_ARGS);
        p.pc += w;
        if (fence_each) {
            send(c, fllm_header(FLLM_KIND_FENCE), LINK_ARGS);
            take_fenced(p, answer_of(c, FLLM_KIND_FENCED, regs, LINK_ARGS));
            if (p.err != FLLM_ERR_NONE) break;
        }
    }
    fllm_beat_t fence = fllm_header(FLLM_KIND_FENCE);
    if (has_sys && p.err == FLLM_ERR_NONE) {
        fence.data.range(7, 0) = wait_of(p.sys);
        fence.data.range(15, 8) = 1;
    }
    send(c, fence, LINK_ARGS);
}

// After core c's FENCED: its error, else the SYS's own check.  Returns the error (or ok()).
static RunError finish_phase(unsigned c, CoreProgress& p, unsigned& stop_op, unsigned& stop_pc) {
    if (p.err != FLLM_ERR_NONE) {
#ifndef __SYNTHESIS__
        std::strcpy(fllm_error_message, p.dispatch_error ? p.dispatch_message : fllm_csim_cores[c].message);
#endif
        return fail(p.err, c, p.err_pc);
    }
    if (release_of(p.sys)) {
#ifndef __SYNTHESIS__
        std::snprintf(fllm_error_message, sizeof(fllm_error_message), "SYS releases no tokens");
#endif
        return fail(FLLM_ERR_PROGRAM, c, p.sys_pc);
    }
    stop_op = FLLM_GET(p.sys, SYS, OP);
    stop_pc = p.sys_pc;
    return ok();
}

static RunError run_phases(const word_t* program, const ImageTable& t, CoreProgress prog[FLLM_CORES],
                           const Regs& regs, LINK_PARAMS) {
#ifdef __SYNTHESIS__
    const bool serial = false, fence_each = false;
#else
    const bool serial = fllm_csim_serial_cores, fence_each = fllm_csim_fence_each;
#endif
PHASES:
    while (true) {
#pragma HLS LOOP_TRIPCOUNT max = 65536
        unsigned stop_op[FLLM_CORES], stop_pc[FLLM_CORES];
        RunError e = ok();
        // hardware: every core's phase goes out, then the fences are collected, core by core;
        // C simulation (serial): each core's phase runs to its fence before the next core's
        // starts, the Python simulator's order (a remote read sees the cores before it done)
    CORES_DISPATCH:
        for (unsigned c = 0; c < FLLM_CORES; c++) {
            dispatch_phase(program, t, c, prog[c], fence_each, regs, LINK_ARGS);
            if (serial) {
                take_fenced(prog[c], answer_of(c, FLLM_KIND_FENCED, regs, LINK_ARGS));
                e = finish_phase(c, prog[c], stop_op[c], stop_pc[c]);
                if (e.code) return e;
            }
        }
    CORES_FENCE:
        for (unsigned c = 0; c < FLLM_CORES && !serial; c++) {
            take_fenced(prog[c], answer_of(c, FLLM_KIND_FENCED, regs, LINK_ARGS));
            RunError ec = finish_phase(c, prog[c], stop_op[c], stop_pc[c]);
            if (ec.code && !e.code) e = ec;
        }
        if (e.code) return e;
        for (unsigned c = 1; c < FLLM_CORES; c++) {
            if (stop_op[c] != stop_op[0]) {
#ifndef __SYNTHESIS__
                std::snprintf(fllm_error_message, sizeof(fllm_error_message),
                              "cores disagree at a SYS instruction");
#endif
                return fail(FLLM_ERR_PROGRAM, c, stop_pc[c]);
            }
        }
        if (stop_op[0] == FLLM_SYS_OP_END) break;        // otherwise: barrier, next phase
    }
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        if (prog[c].leftover) {
#ifndef __SYNTHESIS__
            const unsigned bit = __builtin_ctzll(prog[c].leftover);
            std::snprintf(fllm_error_message, sizeof(fllm_error_message),
                          "core %u ends with unconsumed dependency tokens (%u -> %u)", c, bit / FLLM_NUM_UNITS,
                          bit % FLLM_NUM_UNITS);
#endif
            return fail(FLLM_ERR_PROGRAM, c, (unsigned)t.last_pc[c]);
        }
    }
    return ok();
}

// ---------------------------------------------------------------------------------------------
// The kernel
// ---------------------------------------------------------------------------------------------
void scheduler(const word_t* program, unsigned pos, unsigned len, unsigned* status,
               unsigned* error_code, unsigned* error_core, unsigned* error_pc, unsigned* cycles_lo,
               unsigned* cycles_hi, unsigned* insns_lo, unsigned* insns_hi, unsigned soft_reset,
               fllm_link_t& cmd0, fllm_link_t& cmd1, fllm_link_t& cmd2, fllm_link_t& done0,
               fllm_link_t& done1, fllm_link_t& done2) {
#pragma HLS INTERFACE mode = m_axi port = program bundle = instr offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = s_axilite port = program bundle = control
#pragma HLS INTERFACE mode = s_axilite port = pos bundle = control
#pragma HLS INTERFACE mode = s_axilite port = len bundle = control
#pragma HLS INTERFACE mode = s_axilite port = status bundle = control
#pragma HLS INTERFACE mode = s_axilite port = error_code bundle = control
#pragma HLS INTERFACE mode = s_axilite port = error_core bundle = control
#pragma HLS INTERFACE mode = s_axilite port = error_pc bundle = control
#pragma HLS INTERFACE mode = s_axilite port = cycles_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = cycles_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = insns_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = insns_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = soft_reset bundle = control
#pragma HLS INTERFACE mode = axis port = cmd0
#pragma HLS INTERFACE mode = axis port = cmd1
#pragma HLS INTERFACE mode = axis port = cmd2
#pragma HLS INTERFACE mode = axis port = done0
#pragma HLS INTERFACE mode = axis port = done1
#pragma HLS INTERFACE mode = axis port = done2
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    *cycles_lo = *cycles_hi = 0;          // C simulation has no clock; the timing model predicts it
    *error_pc = 0;
    *insns_lo = *insns_hi = 0;
    if (soft_reset) {                     // abort: every running core unit stops (END)
        for (unsigned c = 0; c < FLLM_CORES; c++) send(c, fllm_header(FLLM_KIND_END), LINK_ARGS);
        *status = FLLM_STATUS_IDLE;
        *error_code = FLLM_ERR_NONE;
        *error_core = 0;
        return;
    }
    *status = FLLM_STATUS_RUNNING;
    *error_code = FLLM_ERR_NONE;
    *error_core = 0;
    const Regs regs = {status, error_code, error_core};
#ifndef __SYNTHESIS__
    fllm_error_message[0] = 0;
#endif
    // every core's memctrl says HELLO when it starts (STALLED while one has not), then RUN
HELLO:
    for (unsigned c = 0; c < FLLM_CORES; c++) answer_of(c, FLLM_KIND_HELLO, regs, LINK_ARGS);
    static CoreProgress prog[FLLM_CORES];
RUN:
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        fllm_beat_t run = fllm_header(FLLM_KIND_RUN);
        run.data.range(7, 0) = c;
        fllm_put_u32(run, 4, pos);
        fllm_put_u32(run, 8, len);
        send(c, run, LINK_ARGS);
        prog[c].pc = 0;
        prog[c].executed = 0;
        prog[c].leftover = 0;
        for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
            for (unsigned d = 0; d < FLLM_NUM_UNITS; d++) prog[c].pending[s][d] = 0;
    }
#ifdef __SYNTHESIS__
    const uint64_t words = 0xFFFFFFFFull;  // the header's size is all there is on hardware
#else
    const uint64_t words = fllm_csim_program_words;
#endif
    ImageTable t;
    RunError e = load_image(program, words, t);
    if (!e.code) e = run_phases(program, t, prog, regs, LINK_ARGS);
END:
    for (unsigned c = 0; c < FLLM_CORES; c++) send(c, fllm_header(FLLM_KIND_END), LINK_ARGS);
    uint64_t insns = 0;
    for (unsigned c = 0; c < FLLM_CORES; c++) insns += prog[c].executed;
    *insns_lo = (unsigned)insns;
    *insns_hi = (unsigned)(insns >> 32);
    *error_code = e.code;
    *error_core = e.code ? e.core : 0;
    *error_pc = e.code ? e.pc : 0;
    *status = e.code ? FLLM_STATUS_ERROR : FLLM_STATUS_DONE;
}
