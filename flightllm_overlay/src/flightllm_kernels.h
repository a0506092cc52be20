// flightllm_kernels.h: types, instruction field decoding, per-core state and kernel prototypes shared by the FlightLLM HLS kernels.
//
// One core = four kinds of unit behind the scheduler (hw/design.py): the memory controller (LD and
// ST queues), the MPE (MM and MV queues) and MISC.  The scheduler fetches each core's stream from
// the DDR image, checks it, and pushes every instruction into its unit's queue (hls::stream).
// A unit takes the head of its queue when every token its `wait` names is present in the token
// FIFOs token[src][unit], executes it, and pushes one token into token[unit][dst] for each bit of
// `release`.  SYS is executed by the scheduler itself: a fence over the core's units, then a barrier
// across cores.  Semantics: docs/isa.md; the reference executor is sim/functional.py.
#ifndef FLIGHTLLM_KERNELS_H
#define FLIGHTLLM_KERNELS_H

#include <ap_int.h>
#include <hls_stream.h>

#include <cstdint>

#include "flightllm_fp.h"
#include "flightllm_hw.h"

// ---------------------------------------------------------------------------------------------
// Instruction words and fields
// ---------------------------------------------------------------------------------------------
typedef ap_uint<32 * FLLM_MAX_INSN_WORDS> insn_bits_t;   // one instruction's bit string
typedef ap_uint<32> word_t;

// One dispatched instruction: its bits and its word offset in the core's stream (the error pc).
struct cmd_t {
    insn_bits_t bits;
    ap_uint<32> pc;
};

// One completion record a unit sends back to the scheduler (for the SYS fence and errors).
struct done_t {
    ap_uint<32> pc;
    ap_uint<4> err;        // FLLM_ERR_*; FLLM_ERR_NONE when it executed
    ap_uint<1> skipped;    // 1: not executed because the unit had already failed
};

static inline uint64_t fllm_field(const insn_bits_t& b, unsigned off, unsigned width) {
    return b.range(off + width - 1, off).to_uint64();
}

#define FLLM_GET(bits, FMT, NAME) fllm_field(bits, FLLM_##FMT##_##NAME##_OFF, FLLM_##FMT##_##NAME##_W)

// LD and ST share one layout, and so do MM and MV (spec/isa.py: _MOVE, _MATRIX); the kernels read
// both through the LD and MM offsets.
static_assert(FLLM_LD_BITS == FLLM_ST_BITS && FLLM_LD_HBM_ADDR_OFF == FLLM_ST_HBM_ADDR_OFF &&
              FLLM_LD_BUF_STRIDE_OFF == FLLM_ST_BUF_STRIDE_OFF, "LD and ST layouts differ");
static_assert(FLLM_MM_BITS == FLLM_MV_BITS && FLLM_MM_OUT_STRIDE_OFF == FLLM_MV_OUT_STRIDE_OFF &&
              FLLM_MM_A_ADDR_OFF == FLLM_MV_A_ADDR_OFF, "MM and MV layouts differ");

struct MoveFields {        // LD / ST
    unsigned wait, release, buf, dyn, remote, remote_core, channel, stripe;
    uint64_t hbm_addr, hbm_stride;
    unsigned buf_addr, rows, row_bytes, buf_stride;
    // LD through the dequantisation unit (wfmt = packed, spec/wformat.py): columns, code width
    // and group size (indices into FLLM_WEIGHT_BITS / FLLM_WEIGHT_GROUPS), N:16 sparsity with
    // where the codes (fsb) and indices (meta) go, and the tile's kept weights / 16 and index bytes
    unsigned wfmt, wk, wbits, wgroup, sparse, meta_addr, fsb_addr, wn, wmeta;
};

struct MatFields {         // MM / MV
    unsigned wait, release, wt, dyn_n, dyn_k, no_wscale, m, n, k;
    unsigned a_addr, a_scale, w_addr, w_scale, out_addr, a_stride, w_stride, out_stride;
    // sparse operand (N:16 blocks): codes at fsb_addr, meta_len index bytes at meta_addr,
    // 16*nnz kept INT8 weights at w_addr in MPE order
    unsigned sparse, meta_addr, fsb_addr, nnz, meta_len;
    // block-sparse attention (isa.attention_block_keep): the hardware skips masked key blocks;
    // the results are those of the dense product, so the C simulation computes that
    unsigned blk_sink, blk_win;
};

struct MiscFields {
    unsigned wait, release, op, dyn_k, causal, out_abuf, bcast_b, b_f32, rows, k, groups;
    unsigned a_addr, b_addr, out_addr, out2_addr, a_stride, b_stride, out_stride;
    uint32_t imm;
    unsigned blk_sink, blk_win;   // causal softmax: block-sparse pattern (0 window: dense causal)
};

#include "flightllm_decode.h"   // fllm_decode_move / fllm_decode_mat / fllm_decode_misc

// ---------------------------------------------------------------------------------------------
// Per-core state
// ---------------------------------------------------------------------------------------------
static constexpr unsigned FLLM_EXEC_UNITS = FLLM_NUM_UNITS - 1;  // LD ST MM MV MISC (not SYS)
static_assert(FLLM_UNIT_SYS == FLLM_EXEC_UNITS, "SYS must be the last unit");

struct UnitHead {          // the instruction a unit has taken from its queue but not yet run
    cmd_t cmd;
    bool valid;
    bool failed;           // the unit stopped on an error: it skips the rest of this run
};

struct CoreCounters {
    uint64_t insns[FLLM_NUM_UNITS];
    uint64_t macs;         // multiply-accumulates the configurable chain performs (kept weights)
    uint64_t fixed_macs;   // MAC slots a fixed dense chain would spend on the same work (m*n*k)
    uint64_t misc_elements;
    uint64_t hbm_read[FLLM_CHANNELS_PER_CORE], hbm_written[FLLM_CHANNELS_PER_CORE];
};

// Everything of one core: on-chip buffers (SRAM: they keep their contents between runs), the
// unit queues, the token FIFOs, the completion stream, and the counters of the current run.
struct CoreState {
    uint8_t wbuf[FLLM_BUF_WBUF_BYTES];
    uint8_t abuf[FLLM_BUF_ABUF_BYTES];
    uint8_t gbuf[FLLM_BUF_GBUF_BYTES];
    uint8_t meta[FLLM_BUF_META_BYTES];
    uint8_t fsb[FLLM_BUF_FSB_BYTES];
    uint8_t bias[FLLM_BUF_BIAS_BYTES];
    hls::stream<cmd_t> queue[FLLM_EXEC_UNITS];
    hls::stream<ap_uint<1> > token[FLLM_NUM_UNITS][FLLM_NUM_UNITS];   // [src][dst]
    hls::stream<done_t> done;
    UnitHead head[FLLM_EXEC_UNITS];
    CoreCounters count;

    uint8_t* buffer(unsigned i) {
        switch (i) {
            case FLLM_BUF_WBUF: return wbuf;
            case FLLM_BUF_ABUF: return abuf;
            case FLLM_BUF_GBUF: return gbuf;
            case FLLM_BUF_META: return meta;
            case FLLM_BUF_FSB: return fsb;
            default: return bias;
        }
    }
};

// What every unit of a core needs to know about the current run.
struct RunContext {
    unsigned core;                  // index of this core
    uint32_t pos, len;              // run-time parameters P and L
    CoreState* cores;               // every core (a remote LD reads another core's buffer)
    // HBM ports of this core (port k reaches pseudo-channel FLLM_CORE_CHANNELS[core][k]); a null
    // pointer is a port with no buffer bound in this run.  port_bytes: the bound buffer's size
    // (C simulation only checks it; hardware sees the whole pseudo-channel).
    uint8_t* port[FLLM_CHANNELS_PER_CORE];
    uint64_t port_bytes[FLLM_CHANNELS_PER_CORE];
};

// ---------------------------------------------------------------------------------------------
// Little-endian element access to a byte buffer
// ---------------------------------------------------------------------------------------------
static inline int8_t fllm_ld_i8(const uint8_t* b, uint64_t a) { return (int8_t)b[a]; }
static inline uint16_t fllm_ld_u16(const uint8_t* b, uint64_t a) {
    return (uint16_t)(b[a] | (b[a + 1] << 8));
}
static inline uint32_t fllm_ld_u32(const uint8_t* b, uint64_t a) {
    return (uint32_t)b[a] | ((uint32_t)b[a + 1] << 8) | ((uint32_t)b[a + 2] << 16) |
           ((uint32_t)b[a + 3] << 24);
}
static inline float fllm_ld_f16(const uint8_t* b, uint64_t a) { return fllm_f16_to_f32(fllm_ld_u16(b, a)); }
static inline float fllm_ld_f32(const uint8_t* b, uint64_t a) { return fllm_bits_f32(fllm_ld_u32(b, a)); }
static inline void fllm_st_u16(uint8_t* b, uint64_t a, uint16_t v) {
    b[a] = (uint8_t)v;
    b[a + 1] = (uint8_t)(v >> 8);
}
static inline void fllm_st_u32(uint8_t* b, uint64_t a, uint32_t v) {
    for (int i = 0; i < 4; i++) b[a + i] = (uint8_t)(v >> (8 * i));
}

// ---------------------------------------------------------------------------------------------
// Errors (C simulation keeps a message; hardware only has the code, core and pc)
// ---------------------------------------------------------------------------------------------
#ifndef __SYNTHESIS__
#include <cstdio>
extern char fllm_error_message[512];
#define FLLM_FAIL(code, ...) \
    do { std::snprintf(fllm_error_message, sizeof(fllm_error_message), __VA_ARGS__); return (code); } while (0)
#else
#define FLLM_FAIL(code, ...) return (code)
#endif

// Region check of an operand of `count` rows of `row_bytes` at `addr`, rows `stride` apart: every
// byte must lie inside a buffer of `size` bytes (functional.py _region).  0 or FLLM_ERR_ADDRESS.
unsigned fllm_check_region(uint64_t size, uint64_t addr, uint64_t rows, uint64_t row_bytes,
                           uint64_t stride, const char* what);
// Element operand (functional.py _array): alignment (FLLM_ERR_PROGRAM), then the region.
unsigned fllm_check_array(uint64_t size, uint64_t addr, uint64_t rows, uint64_t cols,
                          unsigned item, uint64_t stride, const char* what);

// ---------------------------------------------------------------------------------------------
// Unit datapaths: execute one instruction (the token protocol is around them).  0 or FLLM_ERR_*.
// ---------------------------------------------------------------------------------------------
unsigned fllm_exec_ld(const MoveFields& f, RunContext& ctx);
unsigned fllm_exec_st(const MoveFields& f, RunContext& ctx);
unsigned fllm_exec_mpe(const MatFields& f, bool mv, RunContext& ctx);
unsigned fllm_exec_misc(const MiscFields& f, RunContext& ctx);

// One unit queue: take ready instructions (every wait token present) and run them until the
// queue is empty or the head waits.  Returns how many instructions it took.  Shared by the kernels.
unsigned fllm_unit_drain(unsigned unit, RunContext& ctx);

// ---------------------------------------------------------------------------------------------
// Kernels (hw/design.py compute units).  The s_axilite arguments are those of the block design,
// in its order; the unit kernels' last argument is their core's link (queues, tokens, buffers).
// ---------------------------------------------------------------------------------------------
static_assert(FLLM_CHANNELS_PER_CORE == 8, "memctrl lists one m_axi pointer per HBM port: 8");

void memctrl(uint8_t* hbm0, uint8_t* hbm1, uint8_t* hbm2, uint8_t* hbm3, uint8_t* hbm4,
             uint8_t* hbm5, uint8_t* hbm6, uint8_t* hbm7, unsigned* bytes_read_lo,
             unsigned* bytes_read_hi, unsigned* bytes_written_lo, unsigned* bytes_written_hi,
             RunContext& link);
void mpe(unsigned* insns_lo, unsigned* insns_hi, unsigned* macs_lo, unsigned* macs_hi,
         unsigned* fixed_macs_lo, unsigned* fixed_macs_hi, RunContext& link);
void misc(unsigned* insns_lo, unsigned* insns_hi, unsigned* elements_lo, unsigned* elements_hi,
          RunContext& link);

// Scheduling policy of the C simulation of the concurrent units.
enum FllmSchedule {
    FLLM_SCHEDULE_PROGRAM = 0,     // one instruction at a time, in program order (= sim/functional.py)
    FLLM_SCHEDULE_DECOUPLED = 1,   // dispatch a whole phase, then let every unit run ahead as
                                   // far as its tokens allow (consumers first): any missing
                                   // wait shows up as a different result
};

struct SchedulerResult {
    unsigned status, error_code, error_core, error_pc;
    uint64_t cycles, insns;
};

// The whole accelerator for one start of the scheduler: fetch the image at `program` (`words`
// 32-bit words readable there), run every core phase by phase, SYS barriers between phases.
// hbm[c][k] / hbm_bytes[c][k]: core c's port k.  cores: the per-core state (persists across runs).
SchedulerResult flightllm_run(const word_t* program, uint64_t words, uint32_t pos, uint32_t len,
                              uint8_t* hbm[FLLM_CORES][FLLM_CHANNELS_PER_CORE],
                              uint64_t hbm_bytes[FLLM_CORES][FLLM_CHANNELS_PER_CORE],
                              CoreState* cores, FllmSchedule schedule);

// The scheduler kernel (s_axilite registers of hw/design.py, m_axi_instr for the image).
void scheduler(const word_t* program, unsigned pos, unsigned len, unsigned* status,
               unsigned* error_code, unsigned* error_core, unsigned* error_pc, unsigned* cycles_lo,
               unsigned* cycles_hi, unsigned* insns_lo, unsigned* insns_hi, unsigned soft_reset,
               RunContext links[FLLM_CORES], uint64_t program_words, FllmSchedule schedule);

#endif  // FLIGHTLLM_KERNELS_H
