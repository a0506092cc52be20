// memctrl.cpp: the memctrl kernel, one per core: owns the core's on-chip buffers and HBM ports, queues the scheduler's instructions per unit and issues them under the wait/release tokens, serves misc and the other cores.
//
// Protocol (docs/hls_kernels.md): HELLO to the scheduler at start; RUN (core, pos, len) starts a
// run; INSN beats go to the unit queues; FENCE issues everything queued and answers FENCED (the
// first error in program order, the tokens left); END stops the kernel (forwarded to mpe and misc).
// Beats before RUN are left over from an aborted run and dropped.
//
// Issue: a unit's head runs when every token its `wait` names is present; the units are tried in
// the order MISC, MM, MV, LD, ST, each as far as it can go, until none can (the C simulation's
// "decoupled" schedule; the scheduler's fence after every instruction gives program order).
// Commands are taken until a FENCE or a full queue, so the order of execution depends only on
// the command stream.  Execution is one instruction at a time: the units share the buffers.
#include "memctrl.h"

static constexpr unsigned QDEPTH = 1024;      // instructions per unit queue
static constexpr unsigned ISSUE_ORDER[FLLM_EXEC_UNITS] = {FLLM_UNIT_MISC, FLLM_UNIT_MM, FLLM_UNIT_MV,
                                                          FLLM_UNIT_LD, FLLM_UNIT_ST};

struct UnitQueues {
    insn_bits_t bits[FLLM_EXEC_UNITS][QDEPTH];
    uint32_t pc[FLLM_EXEC_UNITS][QDEPTH];
    unsigned head[FLLM_EXEC_UNITS], count[FLLM_EXEC_UNITS];
    bool failed[FLLM_EXEC_UNITS];        // the unit stopped on an error: it skips the rest of the run
    ap_uint<16> tokens[FLLM_NUM_UNITS][FLLM_NUM_UNITS];   // [src][dst]
    unsigned err;                         // first error of the current fence (lowest pc)
    uint32_t err_pc;
};

// the links to this core's mpe and misc
#define UNIT_PARAMS fllm_link_t &mpe_op, fllm_link_t &mpe_res, fllm_link_t &misc_op, fllm_link_t &misc_req
#define UNIT_ARGS mpe_op, mpe_res, misc_op, misc_req
// everything issuing an instruction may touch
#define CORE_PARAMS CoreRun &run, CoreBuffers &B, FLLM_HBM_PARAMS, FLLM_PEER_PARAMS, UNIT_PARAMS
#define CORE_ARGS run, B, FLLM_HBM_ARGS, FLLM_PEER_ARGS, UNIT_ARGS

static void reset_queues(UnitQueues& q) {
RESET_UNITS:
    for (unsigned u = 0; u < FLLM_EXEC_UNITS; u++) {
        q.head[u] = q.count[u] = 0;
        q.failed[u] = false;
    }
RESET_TOKENS:
    for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
        for (unsigned d = 0; d < FLLM_NUM_UNITS; d++) q.tokens[s][d] = 0;
    q.err = FLLM_ERR_NONE;
    q.err_pc = FLLM_UNKNOWN;
}

// ---------------------------------------------------------------------------------------------
// MISC: the job to misc_<c>, then its buffer requests until DONE
// ---------------------------------------------------------------------------------------------
unsigned fllm_exec_misc(const insn_bits_t& bits, CoreRun& run, CoreBuffers& B, fllm_link_t& misc_op,
                        fllm_link_t& misc_req) {
    fllm_beat_t job = fllm_header(FLLM_KIND_MISC_JOB);
    job.data.range(32 * FLLM_MAX_INSN_WORDS - 1, 0) = bits;
    fllm_put_u32(job, 40, run.pos);
    fllm_put_u32(job, 44, run.len);
    misc_op.write(job);
SERVE_MISC:
    while (true) {
#pragma HLS LOOP_TRIPCOUNT max = 131072
        fllm_beat_t r = misc_req.read();
        const unsigned kind = fllm_kind(r);
        if (kind == FLLM_KIND_MISC_DONE) {
            run.count.misc_elements += fllm_u64_at(r, 8);
            return r.data.range(7, 0).to_uint();
        }
        const unsigned buf = r.data.range(7, 0).to_uint();
        const uint64_t addr = fllm_u32_at(r, 4), n = fllm_u32_at(r, 8);
        const uint64_t beats = (n + FLLM_BEAT_BYTES - 1) / FLLM_BEAT_BYTES;
    MISC_DATA:
        for (uint64_t i = 0; i < beats; i++) {       // misc checked the region before asking
#pragma HLS LOOP_TRIPCOUNT max = 32768
#pragma HLS PIPELINE II = 1
            uint8_t by[FLLM_BEAT_BYTES];
            if (kind == FLLM_KIND_WRITE) {
                fllm_beat_bytes(misc_req.read(), by);
                for (unsigned t = 0; t < FLLM_BEAT_BYTES; t++)
                    if (i * FLLM_BEAT_BYTES + t < n) fllm_buf_set(B, buf, addr + i * FLLM_BEAT_BYTES + t, by[t]);
            } else {
                for (unsigned t = 0; t < FLLM_BEAT_BYTES; t++)
                    by[t] = i * FLLM_BEAT_BYTES + t < n ? fllm_buf_get(B, buf, addr + i * FLLM_BEAT_BYTES + t) : 0;
                misc_op.write(fllm_beat_of(by, i + 1 == beats));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issue
// ---------------------------------------------------------------------------------------------
static unsigned execute(unsigned unit, const insn_bits_t& b, uint32_t pc, CORE_PARAMS) {
    switch (unit) {
        case FLLM_UNIT_LD: return fllm_exec_ld(fllm_decode_move(b), run, B, FLLM_HBM_ARGS, FLLM_PEER_ARGS);
        case FLLM_UNIT_ST: return fllm_exec_st(fllm_decode_move(b), run, B, FLLM_HBM_ARGS);
        case FLLM_UNIT_MM: return fllm_exec_mpe(fllm_decode_mat(b), false, pc, run, B, mpe_op, mpe_res);
        case FLLM_UNIT_MV: return fllm_exec_mpe(fllm_decode_mat(b), true, pc, run, B, mpe_op, mpe_res);
        default: return fllm_exec_misc(b, run, B, misc_op, misc_req);
    }
}

// Run ready heads (every wait token present) until no unit can go on.
static void issue(UnitQueues& q, CORE_PARAMS) {
ISSUE_ROUNDS:
    while (true) {
#pragma HLS LOOP_TRIPCOUNT max = 5120
        unsigned taken = 0;
    ISSUE_UNITS:
        for (unsigned o = 0; o < FLLM_EXEC_UNITS; o++) {
            const unsigned u = ISSUE_ORDER[o];
        ISSUE_HEADS:
            while (q.count[u] > 0) {
#pragma HLS LOOP_TRIPCOUNT max = 1024
                const unsigned h = q.head[u];
                const insn_bits_t bits = q.bits[u][h];
                const uint32_t pc = q.pc[u][h];
                if (!q.failed[u]) {
                    const unsigned wait = FLLM_GET(bits, LD, WAIT), rel = FLLM_GET(bits, LD, RELEASE);
                    bool ready = true;
                    for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
                        if ((wait >> s & 1) && q.tokens[s][u] == 0) ready = false;
                    if (!ready) break;                       // the unit stalls here
                    for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
                        if (wait >> s & 1) q.tokens[s][u]--;
                    run.count.insns[u]++;
                    const unsigned err = execute(u, bits, pc, CORE_ARGS);
                    if (err) {
                        q.failed[u] = true;
                        if (pc < q.err_pc) {
                            q.err = err;
                            q.err_pc = pc;
#ifndef __SYNTHESIS__
                            FllmCsimCore& cs = fllm_csim_cores[run.core];
                            std::snprintf(cs.message, sizeof(cs.message), "%s",
                                          u == FLLM_UNIT_MISC ? cs.misc_message : fllm_error_message);
#endif
                        }
                    } else {
                        for (unsigned t = 0; t < FLLM_NUM_UNITS; t++)
                            if (rel >> t & 1) q.tokens[u][t]++;
                    }
                }                                            // else: skipped
                q.head[u] = (h + 1) % QDEPTH;
                q.count[u]--;
                taken++;
            }
        }
        if (!taken) break;
    }
}

// FENCE: issue everything; what cannot run waits on a unit that failed (dropped) or would
// deadlock (INTERNAL: the scheduler's dispatch checks make that impossible).
static fllm_beat_t fence(const fllm_beat_t& cmd, UnitQueues& q, CORE_PARAMS) {
    issue(q, CORE_ARGS);
    bool left = false, failed = false;
FENCE_UNITS:
    for (unsigned u = 0; u < FLLM_EXEC_UNITS; u++) {
        left |= q.count[u] > 0;
        failed |= q.failed[u];
        q.count[u] = 0;
        q.head[u] = 0;
    }
    if (left && !failed) {
        q.err = FLLM_ERR_INTERNAL;
        q.err_pc = FLLM_UNKNOWN;
#ifndef __SYNTHESIS__
        std::snprintf(fllm_csim_cores[run.core].message, 512, "units of core %u deadlocked", run.core);
#endif
    }
    const bool sys = cmd.data.range(15, 8).to_uint() != 0;
    if (sys && q.err == FLLM_ERR_NONE) {        // SYS: its own wait tokens, counted as executed
        const unsigned wait = cmd.data.range(7, 0).to_uint();
        for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
            if ((wait >> s & 1) && q.tokens[s][FLLM_UNIT_SYS] > 0) q.tokens[s][FLLM_UNIT_SYS]--;
        run.count.insns[FLLM_UNIT_SYS]++;
    }
    fllm_beat_t a = fllm_header(FLLM_KIND_FENCED);
    a.data.range(7, 0) = q.err;
    fllm_put_u32(a, 4, q.err_pc);
    uint64_t executed = 0, leftover = 0;
    for (unsigned u = 0; u < FLLM_NUM_UNITS; u++) executed += run.count.insns[u];
    for (unsigned s = 0; s < FLLM_NUM_UNITS; s++)
        for (unsigned d = 0; d < FLLM_NUM_UNITS; d++)
            if (q.tokens[s][d] != 0) leftover |= 1ull << (s * FLLM_NUM_UNITS + d);
    fllm_put_u32(a, 8, (uint32_t)executed);
    fllm_put_u64(a, 16, leftover);
    q.err = FLLM_ERR_NONE;
    q.err_pc = FLLM_UNKNOWN;
    return a;
}

static void enqueue(const fllm_beat_t& cmd, UnitQueues& q, CORE_PARAMS) {
    const insn_bits_t bits = fllm_insn_of(cmd);
    const unsigned u = FLLM_UNIT_OF_OPCODE[FLLM_GET(bits, LD, OPCODE)];
    const uint32_t pc = fllm_u32_at(cmd, 40);
    if (q.count[u] == QDEPTH) issue(q, CORE_ARGS);   // frees the oldest at least
    if (q.count[u] == QDEPTH) {            // still full: its head waits behind a failed unit
        bool failed = false;
        for (unsigned v = 0; v < FLLM_EXEC_UNITS; v++) failed |= q.failed[v];
        if (!failed && pc < q.err_pc) {     // cannot happen after the scheduler's dispatch checks
            q.err = FLLM_ERR_INTERNAL;
            q.err_pc = pc;
#ifndef __SYNTHESIS__
            std::snprintf(fllm_csim_cores[run.core].message, 512, "unit %u's queue is full and stuck", u);
#endif
        }
        return;
    }
    const unsigned t = (q.head[u] + q.count[u]) % QDEPTH;
    q.bits[u][t] = bits;
    q.pc[u][t] = pc;
    q.count[u]++;
}

// ---------------------------------------------------------------------------------------------
// Remote reads between cores
// ---------------------------------------------------------------------------------------------
static void answer(const fllm_beat_t& r, const CoreBuffers& B, fllm_link_t& out) {
    const unsigned buf = r.data.range(7, 0).to_uint();
    const uint64_t addr = fllm_u32_at(r, 4), rows = fllm_u32_at(r, 8), row_bytes = fllm_u32_at(r, 12),
                   stride = fllm_u32_at(r, 16);
    const uint64_t total = rows * row_bytes, beats = (total + FLLM_BEAT_BYTES - 1) / FLLM_BEAT_BYTES;
REMOTE_OUT:
    for (uint64_t i = 0; i < beats; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 32768
#pragma HLS PIPELINE II = 1
        uint8_t by[FLLM_BEAT_BYTES];
        for (unsigned t = 0; t < FLLM_BEAT_BYTES; t++) {
            const uint64_t j = i * FLLM_BEAT_BYTES + t;
            by[t] = j < total ? fllm_buf_get(B, buf, addr + (j / row_bytes) * stride + j % row_bytes) : 0;
        }
        out.write(fllm_beat_of(by, i + 1 == beats));
    }
}

bool fllm_serve_remote(FLLM_PEER_PARAMS, const CoreBuffers& B) {
    (void)peer0_req_out; (void)peer0_data_in; (void)peer1_req_out; (void)peer1_data_in;
    fllm_beat_t r;
    if (peer0_req_in.read_nb(r)) {
        answer(r, B, peer0_data_out);
        return true;
    }
    if (peer1_req_in.read_nb(r)) {
        answer(r, B, peer1_data_out);
        return true;
    }
    return false;
}

void fllm_remote_read(FLLM_PEER_PARAMS, unsigned peer, CoreBuffers& B, unsigned buf, uint64_t src,
                      uint64_t src_stride, uint64_t dst, uint64_t dst_stride, uint64_t rows,
                      uint64_t row_bytes) {
    fllm_beat_t r = fllm_header(FLLM_KIND_REMOTE_READ);     // the peer reads src with src_stride
    r.data.range(7, 0) = buf;
    fllm_put_u32(r, 4, (uint32_t)src);
    fllm_put_u32(r, 8, (uint32_t)rows);
    fllm_put_u32(r, 12, (uint32_t)row_bytes);
    fllm_put_u32(r, 16, (uint32_t)src_stride);
    if (peer == 0) peer0_req_out.write(r);      // one explicit path per link
    else peer1_req_out.write(r);
    const uint64_t total = rows * row_bytes, beats = (total + FLLM_BEAT_BYTES - 1) / FLLM_BEAT_BYTES;
    uint64_t i = 0;
REMOTE_IN:
    while (i < beats) {      // the peer may be reading from us at the same time: keep serving it
#pragma HLS LOOP_TRIPCOUNT max = 32768
        fllm_beat_t d;
        const bool got = peer == 0 ? peer0_data_in.read_nb(d) : peer1_data_in.read_nb(d);
        if (!got) {
            if (!fllm_serve_remote(FLLM_PEER_ARGS, B)) {
#ifndef __SYNTHESIS__
                fllm_csim_idle();
#endif
            }
            continue;
        }
        uint8_t by[FLLM_BEAT_BYTES];
        fllm_beat_bytes(d, by);
        for (unsigned t = 0; t < FLLM_BEAT_BYTES; t++) {
            const uint64_t j = i * FLLM_BEAT_BYTES + t;
            if (j < total) fllm_buf_set(B, buf, dst + (j / row_bytes) * dst_stride + j % row_bytes, by[t]);
        }
        i++;
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel
// ---------------------------------------------------------------------------------------------
void memctrl(uint8_t* hbm0, uint8_t* hbm1, uint8_t* hbm2, uint8_t* hbm3, uint8_t* hbm4,
             uint8_t* hbm5, uint8_t* hbm6, uint8_t* hbm7, unsigned* bytes_read_lo,
             unsigned* bytes_read_hi, unsigned* bytes_written_lo, unsigned* bytes_written_hi,
             fllm_link_t& cmd, fllm_link_t& done, fllm_link_t& mpe_op, fllm_link_t& mpe_res,
             fllm_link_t& misc_op, fllm_link_t& misc_req, fllm_link_t& peer0_req_out,
             fllm_link_t& peer0_req_in, fllm_link_t& peer0_data_out, fllm_link_t& peer0_data_in,
             fllm_link_t& peer1_req_out, fllm_link_t& peer1_req_in, fllm_link_t& peer1_data_out,
             fllm_link_t& peer1_data_in) {
#pragma HLS INTERFACE mode = m_axi port = hbm0 bundle = hbm0 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = m_axi port = hbm1 bundle = hbm1 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = m_axi port = hbm2 bundle = hbm2 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = m_axi port = hbm3 bundle = hbm3 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = m_axi port = hbm4 bundle = hbm4 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = m_axi port = hbm5 bundle = hbm5 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = m_axi port = hbm6 bundle = hbm6 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = m_axi port = hbm7 bundle = hbm7 offset = slave max_widen_bitwidth = 512
#pragma HLS INTERFACE mode = s_axilite port = hbm0 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = hbm1 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = hbm2 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = hbm3 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = hbm4 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = hbm5 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = hbm6 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = hbm7 bundle = control
#pragma HLS INTERFACE mode = s_axilite port = bytes_read_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = bytes_read_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = bytes_written_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = bytes_written_hi bundle = control
#pragma HLS INTERFACE mode = axis port = cmd
#pragma HLS INTERFACE mode = axis port = done
#pragma HLS INTERFACE mode = axis port = mpe_op
#pragma HLS INTERFACE mode = axis port = mpe_res
#pragma HLS INTERFACE mode = axis port = misc_op
#pragma HLS INTERFACE mode = axis port = misc_req
#pragma HLS INTERFACE mode = axis port = peer0_req_out
#pragma HLS INTERFACE mode = axis port = peer0_req_in
#pragma HLS INTERFACE mode = axis port = peer0_data_out
#pragma HLS INTERFACE mode = axis port = peer0_data_in
#pragma HLS INTERFACE mode = axis port = peer1_req_out
#pragma HLS INTERFACE mode = axis port = peer1_req_in
#pragma HLS INTERFACE mode = axis port = peer1_data_out
#pragma HLS INTERFACE mode = axis port = peer1_data_in
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
#ifdef __SYNTHESIS__
    static CoreBuffers buffers;          // the core's SRAM: kept between runs
#pragma HLS BIND_STORAGE variable = buffers type = ram_2p impl = uram
    CoreBuffers& B = buffers;
#else
    CoreBuffers& B = *fllm_csim_cores[fllm_csim_core].buffers;
#endif
    UnitQueues q;
    reset_queues(q);
    CoreRun run;
    run.core = 0;
    run.pos = run.len = 0;
    run.count = CoreCounters();
    bool running = false;
    done.write(fllm_header(FLLM_KIND_HELLO));
MAIN:
    while (true) {          // commands and the peers' requests, whichever comes (ends on END)
#pragma HLS LOOP_TRIPCOUNT max = 1048576
        fllm_beat_t c;
        if (!cmd.read_nb(c)) {
            if (!fllm_serve_remote(FLLM_PEER_ARGS, B)) {
#ifndef __SYNTHESIS__
                fllm_csim_idle();
#endif
            }
            continue;
        }
        const unsigned kind = fllm_kind(c);
        if (kind == FLLM_KIND_RUN) {
            running = true;
            run.core = c.data.range(7, 0).to_uint();
            run.pos = fllm_u32_at(c, 4);
            run.len = fllm_u32_at(c, 8);
            run.count = CoreCounters();
            reset_queues(q);
#ifndef __SYNTHESIS__
            fllm_csim_cores[run.core].message_pc = FLLM_UNKNOWN;
            fllm_csim_cores[run.core].message[0] = 0;
#endif
        } else if (!running) {
            continue;                     // left over from an aborted run
        } else if (kind == FLLM_KIND_INSN) {
            enqueue(c, q, CORE_ARGS);
        } else if (kind == FLLM_KIND_FENCE) {
            done.write(fence(c, q, CORE_ARGS));
        } else {
            break;                        // END
        }
    }
    mpe_op.write(fllm_header(FLLM_KIND_END));
    misc_op.write(fllm_header(FLLM_KIND_END));
    uint64_t rd = 0, wr = 0;
    for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) {
        rd += run.count.hbm_read[k];
        wr += run.count.hbm_written[k];
    }
    *bytes_read_lo = (unsigned)rd;
    *bytes_read_hi = (unsigned)(rd >> 32);
    *bytes_written_lo = (unsigned)wr;
    *bytes_written_hi = (unsigned)(wr >> 32);
#ifndef __SYNTHESIS__
    fllm_csim_cores[run.core].count = run.count;
#endif
}
