// mpe.cpp: the matrix processing engine kernel of one core: exact INT8 x INT8 -> INT32 dot products of the operand beats of docs/mpe_stream.md, dense or N:16 sparse (the sparse MUX).
//
// The kernel holds no buffer of the core: memctrl's MPE feeder (mpe_feed.cpp) sends the operands
// of each pass and applies the FP32 -> FP16 epilogue to the two result beats it gets back.  An RTL
// MPE around the CSD chain (src/rtl/csd_chain.v, L = 16) can replace this kernel: the op and res
// links and the counter registers are its whole interface.
#include "flightllm_kernels.h"

typedef ap_int<8> i8_t;
typedef ap_int<16> prod_t;
typedef ap_int<32> acc_t;    // |acc| <= 65535 * 128 * 128 < 2^31: exact

static constexpr unsigned BLK = FLLM_SPARSE_BLOCK;
static_assert(BLK == 16, "an operand beat carries one 16-column block");

// One OPERAND beat into the 2 x 16 accumulators: slot t belongs to output row ROW0 + t / N.
static void operand_beat(const uint8_t by[FLLM_BEAT_BYTES], acc_t acc_a[BLK], acc_t acc_b[BLK]) {
#pragma HLS INLINE
    const unsigned n = 2u << (by[56] & 3), row0 = by[57] & 15;
    acc_t part_a[BLK], part_b[BLK];
#pragma HLS ARRAY_PARTITION variable = part_a complete
#pragma HLS ARRAY_PARTITION variable = part_b complete
PART_CLEAR:
    for (unsigned s = 0; s < BLK; s++) {
#pragma HLS UNROLL
        part_a[s] = 0;
        part_b[s] = 0;
    }
SLOTS:
    for (unsigned t = 0; t < BLK; t++) {           // the chain's 16 DSP slots side by side
#pragma HLS UNROLL
        unsigned col = (by[16 + t / 2] >> (4 * (t & 1))) & 15;
        i8_t w = (i8_t)(int8_t)by[t];
        prod_t pa = w * (i8_t)(int8_t)by[24 + col];
        prod_t pb = w * (i8_t)(int8_t)by[40 + col];
        part_a[t / n] += pa;
        part_b[t / n] += pb;
    }
ROWS:
    for (unsigned s = 0; s < BLK; s++) {
#pragma HLS UNROLL
        if (s < BLK / n && row0 + s < BLK) {
            acc_a[row0 + s] += part_a[s];
            acc_b[row0 + s] += part_b[s];
        }
    }
}

static void send_results(fllm_link_t& res, const acc_t acc[BLK], bool last) {
    uint8_t by[FLLM_BEAT_BYTES];
RESULT_BYTES:
    for (unsigned r = 0; r < BLK; r++) {
#pragma HLS UNROLL
        uint32_t v = (uint32_t)acc[r].to_int();
        for (unsigned i = 0; i < 4; i++) by[4 * r + i] = (uint8_t)(v >> (8 * i));
    }
    res.write(fllm_beat_of(by, last));
}

// The MPE kernel: runs until END (or a beat of unknown kind), then writes its counters.
void mpe(unsigned* insns_lo, unsigned* insns_hi, unsigned* macs_lo, unsigned* macs_hi,
         unsigned* fixed_macs_lo, unsigned* fixed_macs_hi, fllm_link_t& op, fllm_link_t& res) {
#pragma HLS INTERFACE mode = s_axilite port = insns_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = insns_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = macs_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = macs_hi bundle = control
#pragma HLS INTERFACE mode = s_axilite port = fixed_macs_lo bundle = control
#pragma HLS INTERFACE mode = s_axilite port = fixed_macs_hi bundle = control
#pragma HLS INTERFACE mode = axis port = op
#pragma HLS INTERFACE mode = axis port = res
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    uint64_t insns = 0, macs = 0, fixed = 0;
    acc_t acc_a[BLK], acc_b[BLK];
#pragma HLS ARRAY_PARTITION variable = acc_a complete
#pragma HLS ARRAY_PARTITION variable = acc_b complete
    bool fresh = true;             // the next OPERAND beat starts a pass
BEATS:
    while (true) {
#pragma HLS LOOP_TRIPCOUNT max = 1048576
#pragma HLS PIPELINE II = 1
        fllm_beat_t beat = op.read();
        uint8_t by[FLLM_BEAT_BYTES];
        fllm_beat_bytes(beat, by);
        const unsigned kind = by[FLLM_KIND_BYTE];
        if (kind == FLLM_KIND_MPE_INSN) {
            insns++;
            macs += fllm_u64_at(beat, 0);
            fixed += fllm_u64_at(beat, 8);
            continue;
        }
        if (kind != FLLM_KIND_MPE_OPERAND) break;      // END, or a protocol error: stop
        if (fresh) {
        CLEAR:
            for (unsigned r = 0; r < BLK; r++) {
#pragma HLS UNROLL
                acc_a[r] = 0;
                acc_b[r] = 0;
            }
        }
        operand_beat(by, acc_a, acc_b);
        fresh = beat.last;
        if (beat.last) {
            send_results(res, acc_a, false);
            send_results(res, acc_b, true);
        }
    }
    *insns_lo = (unsigned)insns;
    *insns_hi = (unsigned)(insns >> 32);
    *macs_lo = (unsigned)macs;
    *macs_hi = (unsigned)(macs >> 32);
    *fixed_macs_lo = (unsigned)fixed;
    *fixed_macs_hi = (unsigned)(fixed >> 32);
}
