// flightllm_kernels.h: types, AXI4-Stream beats, instruction fields, per-core state and kernel prototypes shared by the FlightLLM HLS kernels.
//
// Kernels (hw/design.py compute units), each a loop that blocks on its input streams and stops
// on an END beat (docs/hls_kernels.md):
//     scheduler       fetches and checks the image, dispatches each core's instructions over the
//                     core's `cmd` stream, fences and barriers on the `done` stream, latches status
//     memctrl_<c>     core c: owns the core's on-chip buffers and its 8 HBM ports; issues the
//                     instructions of its unit queues under the wait/release tokens: LD/ST itself,
//                     MM/MV through the MPE feeder and mpe_<c>, MISC by serving misc_<c>'s buffer
//                     requests; serves the other cores' remote reads of its buffers
//     mpe_<c>         the matrix engine: integer dot products of operand beats (docs/mpe_stream.md)
//     misc_<c>        the special-function unit: reads and writes the core's buffers by requests
// Every link between kernels is AXI4-Stream (v++ `sc=`), 512-bit beats with TLAST.
// Semantics: docs/isa.md; the reference executor is sim/functional.py.
#ifndef FLIGHTLLM_KERNELS_H
#define FLIGHTLLM_KERNELS_H

#include <ap_axi_sdata.h>
#include <ap_int.h>
#include <hls_stream.h>

#include <cstdint>

#include "flightllm_fp.h"
#include "flightllm_hw.h"

static_assert(FLLM_CORES == 3, "the scheduler and memctrl list one stream argument per core / per peer: 3 cores");
static_assert(FLLM_CHANNELS_PER_CORE == 8, "memctrl lists one m_axi pointer per HBM port: 8");

// ---------------------------------------------------------------------------------------------
// Instruction words and fields
// ---------------------------------------------------------------------------------------------
typedef ap_uint<32 * FLLM_MAX_INSN_WORDS> insn_bits_t;   // one instruction's bit string
typedef ap_uint<32> word_t;

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
    // where the codes (fsb) and indices (meta) go, and the tile's kept weights / 16 and index bytes;
    // wcodes: a dense tile below 8 bits passes its codes and (M, B) to wbuf instead of INT8 weights
    unsigned wfmt, wk, wbits, wgroup, sparse, meta_addr, fsb_addr, wn, wmeta, wcodes;
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
    unsigned dyn_m, m_group;   // dyn_m: only rows whose token (r mod m_group, 0: m) is below len
    unsigned agroup;           // A's scales per FLLM_ACT_GROUPS[agroup] columns (0: one per row)
    unsigned wcodes;           // 0: INT8 weights; g > 0: rows of codes, each followed by its (M, B)
                               // per FLLM_WEIGHT_GROUPS[g - 1] columns (exact group arithmetic)
};

struct MiscFields {
    unsigned wait, release, op, dyn_k, causal, out_abuf, bcast_b, b_f32, rows, k, groups;
    unsigned a_addr, b_addr, out_addr, out2_addr, a_stride, b_stride, out_stride;
    uint32_t imm;
    unsigned blk_sink, blk_win;   // causal softmax: block-sparse pattern (0 window: dense causal)
    unsigned amax, given_max;     // row maxima out (rmsnorm, emul) / in (quant)
    unsigned diffuse;             // quant: round the running sum (error diffusion)
    unsigned dyn_rows;            // only rows whose token (r mod groups) is below len
    unsigned residual;            // quant: overwrite a with the FP16 residual of the rounding
    unsigned agroup;              // quant: one scale per FLLM_ACT_GROUPS[agroup] elements (0: per row)
};

#include "flightllm_decode.h"   // fllm_decode_move / fllm_decode_mat / fllm_decode_misc

// ---------------------------------------------------------------------------------------------
// AXI4-Stream beats: 512-bit TDATA with TLAST.  Byte 63 of a header beat is its kind; data beats
// (after a header that says how many follow) carry 64 payload bytes.
// ---------------------------------------------------------------------------------------------
typedef ap_uint<512> beat_data_t;
typedef hls::axis<beat_data_t, 0, 0, 0> fllm_beat_t;
typedef hls::stream<fllm_beat_t> fllm_link_t;

static constexpr unsigned FLLM_BEAT_BYTES = 64;
static constexpr unsigned FLLM_KIND_BYTE = 63;

enum : unsigned {
    // every link
    FLLM_KIND_END = 0x0F,           // the run is over: the receiver stops
    // mpe op link (docs/mpe_stream.md)
    FLLM_KIND_MPE_INSN = 0x01,
    FLLM_KIND_MPE_OPERAND = 0x02,
    // scheduler -> memctrl (cmd)
    FLLM_KIND_RUN = 0x10,           // core index (byte 0), pos (bytes 4..7), len (bytes 8..11)
    FLLM_KIND_INSN = 0x11,          // instruction bits (bytes 0..39), pc (bytes 40..43)
    FLLM_KIND_FENCE = 0x12,         // issue everything queued; answer FENCED. SYS wait mask: byte 0
    // memctrl -> scheduler (done)
    FLLM_KIND_HELLO = 0x20,         // memctrl started
    FLLM_KIND_FENCED = 0x21,        // err (byte 0), err pc (bytes 4..7), executed (8..11), tokens left (16..23)
    // memctrl <-> misc
    FLLM_KIND_MISC_JOB = 0x30,      // instruction bits (bytes 0..39), pos (40..43), len (44..47)
    FLLM_KIND_READ = 0x32,          // buf (byte 0), addr (4..7), bytes (8..11): that many bytes come back
    FLLM_KIND_WRITE = 0x33,         // buf (byte 0), addr (4..7), bytes (8..11): that many bytes follow
    FLLM_KIND_MISC_DONE = 0x34,     // err (byte 0), elements (8..15)
    // memctrl <-> memctrl (remote reads)
    FLLM_KIND_REMOTE_READ = 0x40,   // buf (byte 0), addr (4..7), rows (8..11), row bytes (12..15), stride (16..19)
};

static inline unsigned fllm_kind(const fllm_beat_t& b) { return b.data.range(511, 504).to_uint(); }
static inline uint32_t fllm_u32_at(const fllm_beat_t& b, unsigned byte) {
    return (uint32_t)b.data.range(8 * byte + 31, 8 * byte).to_uint();
}
static inline uint64_t fllm_u64_at(const fllm_beat_t& b, unsigned byte) {
    return b.data.range(8 * byte + 63, 8 * byte).to_uint64();
}
static inline fllm_beat_t fllm_header(unsigned kind) {
    fllm_beat_t b;
    b.data = 0;
    b.data.range(511, 504) = kind;
    b.keep = -1;
    b.strb = -1;
    b.last = 1;
    return b;
}
static inline void fllm_put_u32(fllm_beat_t& b, unsigned byte, uint32_t v) { b.data.range(8 * byte + 31, 8 * byte) = v; }
static inline void fllm_put_u64(fllm_beat_t& b, unsigned byte, uint64_t v) { b.data.range(8 * byte + 63, 8 * byte) = v; }
// A beat's 64 bytes <-> a byte array (eight 64-bit words: cheap in C simulation, wires in hardware)
static inline void fllm_beat_bytes(const fllm_beat_t& b, uint8_t out[FLLM_BEAT_BYTES]) {
#pragma HLS INLINE
BEAT_WORDS_OUT:
    for (unsigned w = 0; w < 8; w++) {
#pragma HLS UNROLL
        uint64_t v = b.data.range(64 * w + 63, 64 * w).to_uint64();
        for (unsigned i = 0; i < 8; i++) out[8 * w + i] = (uint8_t)(v >> (8 * i));
    }
}
static inline fllm_beat_t fllm_beat_of(const uint8_t in[FLLM_BEAT_BYTES], bool last) {
#pragma HLS INLINE
    fllm_beat_t b;
BEAT_WORDS_IN:
    for (unsigned w = 0; w < 8; w++) {
#pragma HLS UNROLL
        uint64_t v = 0;
        for (unsigned i = 0; i < 8; i++) v |= (uint64_t)in[8 * w + i] << (8 * i);
        b.data.range(64 * w + 63, 64 * w) = v;
    }
    b.keep = -1;
    b.strb = -1;
    b.last = last;
    return b;
}
static inline insn_bits_t fllm_insn_of(const fllm_beat_t& b) { return b.data.range(32 * FLLM_MAX_INSN_WORDS - 1, 0); }
static_assert(32 * FLLM_MAX_INSN_WORDS <= 320, "instruction bits must fit bytes 0..39 of a beat");

// State a compute unit keeps between calls: one copy per unit on hardware (static), one per
// thread (= per compute unit) in C simulation.
#ifdef __SYNTHESIS__
#define FLLM_CU_STATIC static
#else
#define FLLM_CU_STATIC static thread_local
#endif

// Longest loops, for LOOP_TRIPCOUNT (the pragmas want literal numbers; these are checked here)
#define FLLM_TRIP_BYTES 2097152         // bytes of the largest buffer
#define FLLM_TRIP_BEATS 32768           // beats of the largest buffer
#define FLLM_TRIP_ROWS 65535            // rows / k of an instruction (16-bit fields)
#define FLLM_TRIP_BLOCKS 4096           // N:16 blocks of a sparse operand (one fsb byte each)
#define FLLM_TRIP_INSNS 1048576         // instructions of one core's stream
static_assert(FLLM_TRIP_BYTES == FLLM_BUF_WBUF_BYTES && FLLM_TRIP_BYTES == FLLM_BUF_GBUF_BYTES, "trip count");
static_assert(FLLM_TRIP_BEATS == FLLM_TRIP_BYTES / FLLM_BEAT_BYTES && FLLM_TRIP_BLOCKS == FLLM_BUF_FSB_BYTES, "trip count");

// A scheduler fence that sees no answer for this many polls reports STALLED (and goes on waiting).
static constexpr uint32_t FLLM_STALL_POLLS = 1u << 28;

// ---------------------------------------------------------------------------------------------
// Per-core state: owned by memctrl_<c> (static in the kernel: one set per compute unit)
// ---------------------------------------------------------------------------------------------
static constexpr unsigned FLLM_EXEC_UNITS = FLLM_NUM_UNITS - 1;  // LD ST MM MV MISC (not SYS)
static_assert(FLLM_UNIT_SYS == FLLM_EXEC_UNITS, "SYS must be the last unit");

struct CoreCounters {
    uint64_t insns[FLLM_NUM_UNITS];
    uint64_t macs;         // multiply-accumulates the configurable chain performs (kept weights)
    uint64_t fixed_macs;   // MAC slots a fixed dense chain would spend on the same work (m*n*k)
    uint64_t misc_elements;
    uint64_t hbm_read[FLLM_CHANNELS_PER_CORE], hbm_written[FLLM_CHANNELS_PER_CORE];
};

// The on-chip buffers of one core (SRAM: they keep their contents between runs).
struct CoreBuffers {
    uint8_t wbuf[FLLM_BUF_WBUF_BYTES];
    uint8_t abuf[FLLM_BUF_ABUF_BYTES];
    uint8_t gbuf[FLLM_BUF_GBUF_BYTES];
    uint8_t meta[FLLM_BUF_META_BYTES];
    uint8_t fsb[FLLM_BUF_FSB_BYTES];
    uint8_t bias[FLLM_BUF_BIAS_BYTES];
};

// Byte access to buffer `buf` (FLLM_BUF_*): one explicit path per buffer.
static inline uint8_t fllm_buf_get(const CoreBuffers& B, unsigned buf, uint64_t a) {
#pragma HLS INLINE
    switch (buf) {
        case FLLM_BUF_WBUF: return B.wbuf[a];
        case FLLM_BUF_ABUF: return B.abuf[a];
        case FLLM_BUF_GBUF: return B.gbuf[a];
        case FLLM_BUF_META: return B.meta[a];
        case FLLM_BUF_FSB: return B.fsb[a];
        default: return B.bias[a];
    }
}
static inline void fllm_buf_set(CoreBuffers& B, unsigned buf, uint64_t a, uint8_t v) {
#pragma HLS INLINE
    switch (buf) {
        case FLLM_BUF_WBUF: B.wbuf[a] = v; break;
        case FLLM_BUF_ABUF: B.abuf[a] = v; break;
        case FLLM_BUF_GBUF: B.gbuf[a] = v; break;
        case FLLM_BUF_META: B.meta[a] = v; break;
        case FLLM_BUF_FSB: B.fsb[a] = v; break;
        default: B.bias[a] = v; break;
    }
}

// What memctrl knows about the current run and its HBM ports.
struct CoreRun {
    unsigned core;                  // index of this core (from the scheduler's RUN beat)
    uint32_t pos, len;              // run-time parameters P and L
    CoreCounters count;
};

// The HBM ports of one memctrl: port k (m_axi bundle hbm<k>) reaches pseudo-channel
// FLLM_CORE_CHANNELS[core][k].  The eight pointers travel as arguments (never in a struct or
// an array) and fllm_hbm_get/put pick one by a switch: one explicit path per bundle.
#define FLLM_HBM_PARAMS uint8_t *hbm0, uint8_t *hbm1, uint8_t *hbm2, uint8_t *hbm3, uint8_t *hbm4, \
                        uint8_t *hbm5, uint8_t *hbm6, uint8_t *hbm7
#define FLLM_HBM_ARGS hbm0, hbm1, hbm2, hbm3, hbm4, hbm5, hbm6, hbm7

static inline uint8_t fllm_hbm_get(FLLM_HBM_PARAMS, unsigned k, uint64_t a) {
#pragma HLS INLINE
    switch (k) {
        case 0: return hbm0[a];
        case 1: return hbm1[a];
        case 2: return hbm2[a];
        case 3: return hbm3[a];
        case 4: return hbm4[a];
        case 5: return hbm5[a];
        case 6: return hbm6[a];
        default: return hbm7[a];
    }
}
static inline void fllm_hbm_put(FLLM_HBM_PARAMS, unsigned k, uint64_t a, uint8_t v) {
#pragma HLS INLINE
    switch (k) {
        case 0: hbm0[a] = v; break;
        case 1: hbm1[a] = v; break;
        case 2: hbm2[a] = v; break;
        case 3: hbm3[a] = v; break;
        case 4: hbm4[a] = v; break;
        case 5: hbm5[a] = v; break;
        case 6: hbm6[a] = v; break;
        default: hbm7[a] = v; break;
    }
}

// The links of memctrl to its two peers (peer p of core c is core (c + 1 + p) % 3): a request
// goes out on peer<p>_req_out, its bytes come back on peer<p>_data_in; the peers' requests come
// in on peer<p>_req_in and are answered on peer<p>_data_out.  Streams pass by reference only.
#define FLLM_PEER_PARAMS fllm_link_t &peer0_req_out, fllm_link_t &peer0_req_in, fllm_link_t &peer0_data_out, \
                         fllm_link_t &peer0_data_in, fllm_link_t &peer1_req_out, fllm_link_t &peer1_req_in, \
                         fllm_link_t &peer1_data_out, fllm_link_t &peer1_data_in
#define FLLM_PEER_ARGS peer0_req_out, peer0_req_in, peer0_data_out, peer0_data_in, peer1_req_out, \
                       peer1_req_in, peer1_data_out, peer1_data_in

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
// Errors (C simulation keeps a message per thread; hardware only has the code, core and pc)
// ---------------------------------------------------------------------------------------------
#ifndef __SYNTHESIS__
#include <cstdio>
extern thread_local char fllm_error_message[512];
#define FLLM_FAIL(code, ...) \
    do { std::snprintf(fllm_error_message, sizeof(fllm_error_message), __VA_ARGS__); return (code); } while (0)
#else
#define FLLM_FAIL(code, ...) return (code)
#endif

// Shared operand checks (fllm_common.cpp).  Region: every byte of `rows` rows of `row_bytes` at
// `addr`, rows `stride` apart, lies inside a buffer of `size` bytes (functional.py _region).
unsigned fllm_check_region(uint64_t size, uint64_t addr, uint64_t rows, uint64_t row_bytes,
                           uint64_t stride, const char* what);
// Element operand (functional.py _array): alignment (FLLM_ERR_PROGRAM), then the region.
unsigned fllm_check_array(uint64_t size, uint64_t addr, uint64_t rows, uint64_t cols,
                          unsigned item, uint64_t stride, const char* what);

// ---------------------------------------------------------------------------------------------
// Inside memctrl: the unit datapaths (0 or FLLM_ERR_*)
// ---------------------------------------------------------------------------------------------
unsigned fllm_exec_ld(const MoveFields& f, CoreRun& run, CoreBuffers& B, FLLM_HBM_PARAMS, FLLM_PEER_PARAMS);
unsigned fllm_exec_st(const MoveFields& f, CoreRun& run, const CoreBuffers& B, FLLM_HBM_PARAMS);
// MM/MV: check, stream the operands to the MPE, write the epilogue's results (mpe_feed.cpp)
unsigned fllm_exec_mpe(const MatFields& f, bool mv, uint32_t pc, CoreRun& run, CoreBuffers& B,
                       fllm_link_t& mpe_op, fllm_link_t& mpe_res);
// MISC: send the job to misc_<c> and serve its buffer requests until it is done (memctrl.cpp)
unsigned fllm_exec_misc(const insn_bits_t& bits, CoreRun& run, CoreBuffers& B, fllm_link_t& misc_op,
                        fllm_link_t& misc_req);

// ---------------------------------------------------------------------------------------------
// Kernels (hw/design.py compute units).  The s_axilite arguments are the block design's
// registers in its order; the streams follow (v++ sc= connections, hw/design.py STREAMS).
// ---------------------------------------------------------------------------------------------
void scheduler(const word_t* program, unsigned pos, unsigned len, unsigned* status,
               unsigned* error_code, unsigned* error_core, unsigned* error_pc, unsigned* cycles_lo,
               unsigned* cycles_hi, unsigned* insns_lo, unsigned* insns_hi, unsigned soft_reset,
               fllm_link_t& cmd0, fllm_link_t& cmd1, fllm_link_t& cmd2, fllm_link_t& done0,
               fllm_link_t& done1, fllm_link_t& done2);
void memctrl(uint8_t* hbm0, uint8_t* hbm1, uint8_t* hbm2, uint8_t* hbm3, uint8_t* hbm4,
             uint8_t* hbm5, uint8_t* hbm6, uint8_t* hbm7, unsigned* bytes_read_lo,
             unsigned* bytes_read_hi, unsigned* bytes_written_lo, unsigned* bytes_written_hi,
             fllm_link_t& cmd, fllm_link_t& done, fllm_link_t& mpe_op, fllm_link_t& mpe_res,
             fllm_link_t& misc_op, fllm_link_t& misc_req, fllm_link_t& peer0_req_out,
             fllm_link_t& peer0_req_in, fllm_link_t& peer0_data_out, fllm_link_t& peer0_data_in,
             fllm_link_t& peer1_req_out, fllm_link_t& peer1_req_in, fllm_link_t& peer1_data_out,
             fllm_link_t& peer1_data_in);
void mpe(unsigned* insns_lo, unsigned* insns_hi, unsigned* macs_lo, unsigned* macs_hi,
         unsigned* fixed_macs_lo, unsigned* fixed_macs_hi, fllm_link_t& op, fllm_link_t& res);
void misc(unsigned* insns_lo, unsigned* insns_hi, unsigned* elements_lo, unsigned* elements_hi,
          fllm_link_t& op, fllm_link_t& req);

// ---------------------------------------------------------------------------------------------
// C simulation only: each compute unit runs in its own thread (csim_main.cpp); the state a
// kernel keeps in static on-chip memory on hardware (one copy per compute unit) is the
// testbench's per-core storage here, found through the running thread's core index.
// ---------------------------------------------------------------------------------------------
#ifndef __SYNTHESIS__
struct FllmCsimCore {
    CoreBuffers* buffers;
    CoreCounters count;          // the per-unit counters of the last run (memctrl's view)
    char message[512];           // the first error's message of the last run
    uint32_t message_pc;
    char misc_message[512];      // misc_<c>'s message of its last failed job
};
extern FllmCsimCore fllm_csim_cores[FLLM_CORES];
extern thread_local int fllm_csim_core;       // core of the running compute unit (-1: scheduler)
extern bool fllm_csim_serial_cores;           // scheduler: run the cores one after another per phase
extern bool fllm_csim_fence_each;             // scheduler: fence after every instruction
extern uint32_t fllm_csim_stall_polls;        // scheduler: polls before STALLED
extern uint64_t fllm_csim_program_words;      // scheduler: words readable at `program`
void fllm_csim_idle();                        // a poll found nothing: let other threads run
extern thread_local uint64_t fllm_csim_port_bytes[FLLM_CHANNELS_PER_CORE];   // memctrl: bound buffer sizes
extern thread_local bool fllm_csim_port_bound[FLLM_CHANNELS_PER_CORE];
#endif

#endif  // FLIGHTLLM_KERNELS_H
