// scheduler.cpp: the scheduler kernel (image fetch and checks, dispatch to the unit queues under wait/release tokens, SYS fences and barriers across cores) and the unit queue protocol.
//
// Semantics: docs/isa.md sections 1, 3, 5 (SYS), 6 and 7; reference: FunctionalSimulator.run and
// decode_image in sim/functional.py and isa.decode_one.  Errors carry the same code, core and pc
// (word offset in the core's stream) as the Python simulator's exceptions.
#include "flightllm_kernels.h"

#ifndef __SYNTHESIS__
#include <cstring>
char fllm_error_message[512];
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
// Operand checks (functional.py _region / _array)
// ---------------------------------------------------------------------------------------------
unsigned fllm_check_region(uint64_t size, uint64_t addr, uint64_t rows, uint64_t row_bytes,
                           uint64_t stride, const char* what) {
    if (rows == 0 || row_bytes == 0) return 0;
    uint64_t end = addr + (rows - 1) * stride + row_bytes;
    if (end > size)
        FLLM_FAIL(FLLM_ERR_ADDRESS, "%s: bytes 0x%llx..0x%llx fall outside the 0x%llx-byte buffer", what,
                  (unsigned long long)addr, (unsigned long long)end, (unsigned long long)size);
    return 0;
}

unsigned fllm_check_array(uint64_t size, uint64_t addr, uint64_t rows, uint64_t cols, unsigned item,
                          uint64_t stride, const char* what) {
    if (addr % item || (rows > 1 && stride % item))
        FLLM_FAIL(FLLM_ERR_PROGRAM, "%s: address 0x%llx / stride %llu not aligned to %u-byte elements",
                  what, (unsigned long long)addr, (unsigned long long)stride, item);
    return fllm_check_region(size, addr, rows, cols * item, stride, what);
}

// ---------------------------------------------------------------------------------------------
// Instruction fetch and the decode-time checks (isa.decode_one, isa._check_semantics)
// ---------------------------------------------------------------------------------------------
// Assemble the instruction at word `pc` of a stream of `n` words at `stream`.  0 or ILLEGAL.
static unsigned fetch(const word_t* stream, uint64_t n, uint64_t pc, insn_bits_t& bits, unsigned& words) {
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
    } else if (opcode == FLLM_OPCODE_MISC) {
        if (FLLM_GET(b, MISC, OP) >= FLLM_NUM_MISC_OPS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "MISC op is not a legal value");
    } else if (opcode == FLLM_OPCODE_SYS) {
        if (FLLM_GET(b, SYS, OP) >= FLLM_NUM_SYS_OPS)
            FLLM_FAIL(FLLM_ERR_ILLEGAL_INSTRUCTION, "SYS op is not a legal value");
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The unit queue protocol (every unit kernel runs it)
// ---------------------------------------------------------------------------------------------
static unsigned execute(unsigned unit, const insn_bits_t& b, RunContext& ctx) {
    switch (unit) {
        case FLLM_UNIT_LD: return fllm_exec_ld(fllm_decode_move(b), ctx);
        case FLLM_UNIT_ST: return fllm_exec_st(fllm_decode_move(b), ctx);
        case FLLM_UNIT_MM: return fllm_exec_mpe(fllm_decode_mat(b), false, ctx);
        case FLLM_UNIT_MV: return fllm_exec_mpe(fllm_decode_mat(b), true, ctx);
        default: return fllm_exec_misc(fllm_decode_misc(b), ctx);
    }
}

#ifndef __SYNTHESIS__
static char first_message[FLLM_CORES][512];
static uint32_t first_message_pc[FLLM_CORES];
#endif

unsigned fllm_unit_drain(unsigned unit, RunContext& ctx) {
    CoreState& cs = ctx.cores[ctx.core];
    UnitHead& h = cs.head[unit];
    unsigned taken = 0;
DRAIN:
    while (true) {
        if (!h.valid) {
            if (cs.queue[unit].empty()) break;
            h.cmd = cs.queue[unit].read();
            h.valid = true;
        }
        done_t d;
        d.pc = h.cmd.pc;
        d.err = FLLM_ERR_NONE;
        d.skipped = 0;
        if (h.failed) {                                   // the unit stopped on an earlier error
            d.skipped = 1;
        } else {
            unsigned wait = wait_of(h.cmd.bits), rel = release_of(h.cmd.bits);
            bool ready = true;
            for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
                if ((wait >> s & 1) && cs.token[s][unit].empty()) ready = false;
            if (!ready) break;                            // hardware: the unit stalls here
            for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
                if (wait >> s & 1) cs.token[s][unit].read();
            cs.count.insns[unit]++;
            unsigned err = execute(unit, h.cmd.bits, ctx);
            if (err) {
                h.failed = true;
                d.err = err;
#ifndef __SYNTHESIS__
                if ((uint32_t)h.cmd.pc < first_message_pc[ctx.core]) {
                    first_message_pc[ctx.core] = h.cmd.pc;
                    std::strcpy(first_message[ctx.core], fllm_error_message);
                }
#endif
            } else {
                for (unsigned t = 0; t < FLLM_NUM_UNITS; t++)
                    if (rel >> t & 1) cs.token[unit][t].write(1);
            }
        }
        cs.done.write(d);
        h.valid = false;
        taken++;
    }
    return taken;
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

static void reset_core(CoreState& cs) {
    for (unsigned u = 0; u < FLLM_EXEC_UNITS; u++) {
        while (!cs.queue[u].empty()) cs.queue[u].read();
        cs.head[u].valid = false;
        cs.head[u].failed = false;
    }
    for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
        for (unsigned d = 0; d < FLLM_NUM_UNITS; d++)
            while (!cs.token[s][d].empty()) cs.token[s][d].read();
    while (!cs.done.empty()) cs.done.read();
    cs.count = CoreCounters();
}

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
    for (unsigned c = 0; c < ncores; c++) {
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
        while (pc < t.n[c]) {
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

// C simulation of the concurrent units of one core: call the unit kernels until none takes an
// instruction (on hardware they run side by side and stall on missing tokens).  Consumers are
// called first, so in the decoupled schedule each unit runs as early as its tokens allow.
static void run_units(RunContext& link) {
#ifndef __SYNTHESIS__
    CoreState& cs = link.cores[link.core];
    unsigned regs[6];
    while (true) {
        size_t before = cs.done.size();
        misc(&regs[0], &regs[1], &regs[2], &regs[3], link);
        mpe(&regs[0], &regs[1], &regs[2], &regs[3], &regs[4], &regs[5], link);
        memctrl(link.port[0], link.port[1], link.port[2], link.port[3], link.port[4], link.port[5],
                link.port[6], link.port[7], &regs[0], &regs[1], &regs[2], &regs[3], link);
        if (cs.done.size() == before) break;
    }
#else
    (void)link;
#endif
}

// One core's phase: dispatch its instructions up to the next SYS into the unit queues, fence
// (wait for every completion), then execute the SYS.  `pending` is the program-order token count
// per unit pair: a wait that no earlier release can satisfy is a program error at dispatch.
static RunError run_phase(const word_t* program, const ImageTable& t, RunContext& link, uint64_t& pc,
                          unsigned pending[FLLM_NUM_UNITS][FLLM_NUM_UNITS], FllmSchedule schedule,
                          unsigned& stop_op, unsigned& stop_pc) {
    const unsigned c = link.core;
    CoreState& cs = link.cores[c];
    const word_t* s = program + t.off[c];
    uint64_t dispatched = 0, completed = 0;
    unsigned err = FLLM_ERR_NONE, err_pc = FLLM_UNKNOWN;
    bool dispatch_error = false;
    insn_bits_t sys = 0;
    unsigned sys_pc = FLLM_UNKNOWN;
#ifndef __SYNTHESIS__
    char dispatch_message[512] = "";
#endif
DISPATCH:
    while (pc < t.n[c]) {
        insn_bits_t b;
        unsigned w;
        fetch(s, t.n[c], pc, b, w);                     // checked by load_image
        unsigned unit = FLLM_UNIT_OF_OPCODE[opcode_of(b)];
        unsigned wait = wait_of(b), rel = release_of(b);
        for (unsigned u = 0; u < FLLM_NUM_UNITS && !dispatch_error; u++) {
            if (!(wait >> u & 1)) continue;
            if (pending[u][unit] == 0) {
                dispatch_error = true;
#ifndef __SYNTHESIS__
                std::snprintf(dispatch_message, sizeof(dispatch_message),
                              "waits for a token from unit %u that no earlier instruction released (the "
                              "program order is not a valid schedule)", u);
#endif
            } else {
                pending[u][unit]--;
            }
        }
        if (dispatch_error) {
            err = FLLM_ERR_PROGRAM;
            err_pc = (unsigned)pc;
            break;
        }
        if (unit == FLLM_UNIT_SYS) {
            sys = b;
            sys_pc = (unsigned)pc;
            pc += w;
            break;
        }
        for (unsigned u = 0; u < FLLM_NUM_UNITS; u++)
            if (rel >> u & 1) pending[unit][u]++;
        cmd_t cmd;
        cmd.bits = b;
        cmd.pc = (unsigned)pc;
        cs.queue[unit].write(cmd);
        dispatched++;
        pc += w;
        if (schedule == FLLM_SCHEDULE_PROGRAM) {       // one instruction at a time
            run_units(link);
            bool failed = false;
            for (unsigned u = 0; u < FLLM_EXEC_UNITS; u++) failed |= cs.head[u].failed;
            if (failed) break;
        }
    }
    run_units(link);
FENCE:
    while (completed < dispatched && !cs.done.empty()) {
        done_t d = cs.done.read();
        completed++;
        if (d.err != FLLM_ERR_NONE && (unsigned)d.pc < err_pc) {
            err = d.err;
            err_pc = d.pc;
            dispatch_error = false;
        }
    }
    if (err != FLLM_ERR_NONE) {
#ifndef __SYNTHESIS__
        std::strcpy(fllm_error_message, dispatch_error ? dispatch_message : first_message[c]);
#endif
        return fail(err, c, err_pc);
    }
    if (completed < dispatched) {
#ifndef __SYNTHESIS__
        std::snprintf(fllm_error_message, sizeof(fllm_error_message), "units of core %u deadlocked", c);
#endif
        return fail(FLLM_ERR_INTERNAL, c, FLLM_UNKNOWN);
    }
    // SYS: a full fence (every earlier instruction has completed), then its own tokens and op
    unsigned wait = wait_of(sys);
    for (unsigned u = 0; u < FLLM_NUM_UNITS; u++)
        if (wait >> u & 1) cs.token[u][FLLM_UNIT_SYS].read();
    cs.count.insns[FLLM_UNIT_SYS]++;
    if (release_of(sys)) {
#ifndef __SYNTHESIS__
        std::snprintf(fllm_error_message, sizeof(fllm_error_message), "SYS releases no tokens");
#endif
        return fail(FLLM_ERR_PROGRAM, c, sys_pc);
    }
    stop_op = FLLM_GET(sys, SYS, OP);
    stop_pc = sys_pc;
    return ok();
}

static RunError run_all(const word_t* program, uint64_t words, RunContext links[FLLM_CORES],
                        FllmSchedule schedule) {
    ImageTable t;
    RunError e = load_image(program, words, t);
    if (e.code) return e;
    static unsigned pending[FLLM_CORES][FLLM_NUM_UNITS][FLLM_NUM_UNITS];
    uint64_t pcs[FLLM_CORES];
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        pcs[c] = 0;
        for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
            for (unsigned d = 0; d < FLLM_NUM_UNITS; d++) pending[c][s][d] = 0;
    }
PHASES:
    while (true) {
        unsigned stop_op[FLLM_CORES], stop_pc[FLLM_CORES];
        for (unsigned c = 0; c < FLLM_CORES; c++) {     // C simulation: the cores one after another
            e = run_phase(program, t, links[c], pcs[c], pending[c], schedule, stop_op[c], stop_pc[c]);
            if (e.code) return e;
        }
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
        CoreState& cs = links[c].cores[c];
        for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
            for (unsigned d = 0; d < FLLM_NUM_UNITS; d++)
                if (!cs.token[s][d].empty()) {
#ifndef __SYNTHESIS__
                    std::snprintf(fllm_error_message, sizeof(fllm_error_message),
                                  "core %u ends with unconsumed dependency tokens (%u -> %u)", c, s, d);
#endif
                    return fail(FLLM_ERR_PROGRAM, c, (unsigned)t.last_pc[c]);
                }
    }
    return ok();
}

void scheduler(const word_t* program, unsigned pos, unsigned len, unsigned* status,
               unsigned* error_code, unsigned* error_core, unsigned* error_pc, unsigned* cycles_lo,
               unsigned* cycles_hi, unsigned* insns_lo, unsigned* insns_hi, unsigned soft_reset,
               RunContext links[FLLM_CORES], uint64_t program_words, FllmSchedule schedule) {
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
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    // `links` are the per-core unit queues, token FIFOs and completion streams (AXI4-Stream
    // connections in the block design); program_words bounds the image in C simulation and
    // `schedule` picks how C simulation interleaves the concurrent units.
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        reset_core(links[c].cores[c]);
#ifndef __SYNTHESIS__
        first_message_pc[c] = 0xFFFFFFFFu;
        first_message[c][0] = 0;
#endif
    }
    *cycles_lo = *cycles_hi = 0;          // C simulation has no clock; the timing model predicts it
    if (soft_reset) {
        *status = FLLM_STATUS_IDLE;
        *error_code = FLLM_ERR_NONE;
        *error_core = *error_pc = 0;
        *insns_lo = *insns_hi = 0;
        return;
    }
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        links[c].pos = pos;
        links[c].len = len;
    }
#ifndef __SYNTHESIS__
    fllm_error_message[0] = 0;
#endif
    RunError e = run_all(program, program_words, links, schedule);
    uint64_t insns = 0;
    for (unsigned c = 0; c < FLLM_CORES; c++)
        for (unsigned u = 0; u < FLLM_NUM_UNITS; u++) insns += links[c].cores[c].count.insns[u];
    *insns_lo = (unsigned)insns;
    *insns_hi = (unsigned)(insns >> 32);
    *status = e.code ? FLLM_STATUS_ERROR : FLLM_STATUS_DONE;
    *error_code = e.code;
    *error_core = e.code ? e.core : 0;
    *error_pc = e.code ? e.pc : 0;
}

SchedulerResult flightllm_run(const word_t* program, uint64_t words, uint32_t pos, uint32_t len,
                              uint8_t* hbm[FLLM_CORES][FLLM_CHANNELS_PER_CORE],
                              uint64_t hbm_bytes[FLLM_CORES][FLLM_CHANNELS_PER_CORE],
                              CoreState* cores, FllmSchedule schedule) {
    static RunContext links[FLLM_CORES];
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        links[c].core = c;
        links[c].cores = cores;
        for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) {
            links[c].port[k] = hbm[c][k];
            links[c].port_bytes[k] = hbm_bytes[c][k];
        }
    }
    SchedulerResult r;
    unsigned lo[4], hi[2];
    scheduler(program, pos, len, &r.status, &r.error_code, &r.error_core, &r.error_pc, &lo[0], &hi[0],
              &lo[1], &hi[1], 0, links, words, schedule);
    r.cycles = ((uint64_t)hi[0] << 32) | lo[0];
    r.insns = ((uint64_t)hi[1] << 32) | lo[1];
    return r;
}
