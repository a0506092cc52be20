// memctrl.cpp: the memory controller kernel of one core: LD (HBM or remote core -> on-chip buffer, all dyn modes, striped) and ST.
//
// Semantics: docs/isa.md section 5 (LD, ST) and section 4 (dyn modes); reference: the ld/st
// methods of sim/functional.py, whose checks are made here in the same order.
#include "flightllm_kernels.h"

// chunks of a striped row: 2**stripe, stripe < 2**FLLM_LD_STRIPE_W
static constexpr unsigned MAX_STRIPE = 1u << ((1u << FLLM_LD_STRIPE_W) - 1);

// (rows actually moved, HBM byte offset of row 0) after the run-time parameters (isa.md §4)
static unsigned dyn_rows(const MoveFields& f, const RunContext& ctx, uint64_t& rows, uint64_t& off) {
    rows = f.rows;
    off = f.hbm_addr;
    if (f.dyn == FLLM_DYN_STATIC) return 0;
    if (f.dyn == FLLM_DYN_LAST) {
        if (ctx.len < 1 || f.rows < 1) FLLM_FAIL(FLLM_ERR_PROGRAM, "dyn=last needs len >= 1 and rows >= 1");
        rows = 1;
        off = f.hbm_addr + (uint64_t)(ctx.len - 1) * f.hbm_stride;
        return 0;
    }
    uint64_t eff = (f.dyn == FLLM_DYN_AT_POS || f.dyn == FLLM_DYN_STEP) ? (uint64_t)ctx.len
                                                                       : (uint64_t)ctx.pos + ctx.len;
    if (eff > f.rows)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "run-time length %llu exceeds the %u rows this instruction was "
                  "compiled for (pos=%u, len=%u)", (unsigned long long)eff, f.rows, ctx.pos, ctx.len);
    rows = eff;
    if (f.dyn == FLLM_DYN_AT_POS) off = f.hbm_addr + (uint64_t)ctx.pos * f.hbm_stride;
    return 0;
}

// port index of `channel` on this core (functional.py _channel: every failure is an AddressError)
static unsigned channel_port(unsigned channel, const RunContext& ctx, unsigned& port) {
    for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) {
        if (FLLM_CORE_CHANNELS[ctx.core][k] == channel) {
            port = k;
            return 0;
        }
    }
    FLLM_FAIL(FLLM_ERR_ADDRESS, "core %u has no port to HBM pseudo-channel %u", ctx.core, channel);
}

// Copy `rows` rows of `row_bytes` (row r: src + r*src_stride -> dst + r*dst_stride), in row order.
static void copy_rows(uint8_t* dst, uint64_t dst_stride, const uint8_t* src, uint64_t src_stride,
                      uint64_t rows, uint64_t row_bytes) {
COPY_ROWS:
    for (uint64_t r = 0; r < rows; r++) {
    COPY_BYTES:
        for (uint64_t i = 0; i < row_bytes; i++) {
#pragma HLS PIPELINE II = 1
            dst[r * dst_stride + i] = src[r * src_stride + i];
        }
    }
}

// HBM side of an LD/ST: the ports and the byte extent each one moves (functional.py _hbm)
static unsigned hbm_parts(const MoveFields& f, const RunContext& ctx, uint64_t rows, uint64_t off,
                          unsigned ports[MAX_STRIPE], unsigned& parts, uint64_t& part_bytes, uint64_t& part_rows,
                          uint64_t& stride) {
    unsigned stripe = 1u << f.stripe;
    part_rows = rows;
    part_bytes = f.row_bytes;
    stride = f.hbm_stride;
    unsigned first;
    unsigned err = channel_port(f.channel, ctx, first);
    if (err) return err;
    if (stripe > 1) {                    // one row in `stripe` equal chunks, consecutive ports
        part_rows = 1;
        part_bytes = f.row_bytes / stripe;
        stride = part_bytes;
    }
    parts = stripe;
    uint64_t extent = part_rows ? (part_rows - 1) * stride + part_bytes : 0;
    for (unsigned i = 0; i < stripe; i++) {
        unsigned k = (first + i) % FLLM_CHANNELS_PER_CORE;
        unsigned ch = FLLM_CORE_CHANNELS[ctx.core][k];
        if (ctx.port[k] == nullptr)
            FLLM_FAIL(FLLM_ERR_ADDRESS, "HBM pseudo-channel %u is not bound to core %u", ch, ctx.core);
        if (off + extent > FLLM_HBM_CHANNEL_BYTES)
            FLLM_FAIL(FLLM_ERR_ADDRESS, "HBM address 0x%llx+0x%llx is past the end of pseudo-channel %u",
                      (unsigned long long)off, (unsigned long long)extent, ch);
#ifndef __SYNTHESIS__
        if (off + extent > ctx.port_bytes[k])
            FLLM_FAIL(FLLM_ERR_ADDRESS, "HBM address 0x%llx+0x%llx is past the 0x%llx-byte buffer bound "
                      "to pseudo-channel %u", (unsigned long long)off, (unsigned long long)extent,
                      (unsigned long long)ctx.port_bytes[k], ch);
#endif
        ports[i] = k;
    }
    return 0;
}

// LD through the dequantisation unit (wfmt = int4; functional.py ld_dequant, units.dequant_int4):
// `row_bytes` of HBM tile -> `rows` INT8 weight rows of `wk` columns at buf_addr, then `rows`
// FP32 row scales.  Tile: [rows*wk/2 packed nibbles, low first][rows*wk/32 group bytes: zero
// point z in bits 3..0, multiplier m-1 in bits 6..4][rows FP32 scales]; w = (q - z) * m.
static unsigned ld_dequant(const MoveFields& f, RunContext& ctx) {
    uint64_t rows = f.rows, k = f.wk, addr = f.buf_addr;
    if (!rows || !k) return 0;
    unsigned err = fllm_check_region(FLLM_BUF_WBUF_BYTES, addr, 1, rows * (k + 4), 0, "LD (dequantising) of wbuf");
    if (err) return err;
    uint64_t groups = k / FLLM_INT4_GROUP;
    uint64_t need = rows * (k / 2 + groups + 4);
    if (f.row_bytes < need)
        FLLM_FAIL(FLLM_ERR_PROGRAM, "an int4 tile of %llu x %llu needs %llu bytes; the LD reads %u",
                  (unsigned long long)rows, (unsigned long long)k, (unsigned long long)need, f.row_bytes);
    unsigned ports[MAX_STRIPE], parts;
    uint64_t part_bytes, part_rows, stride;
    err = hbm_parts(f, ctx, 1, f.hbm_addr, ports, parts, part_bytes, part_rows, stride);
    if (err) return err;
    CoreCounters& cc = ctx.cores[ctx.core].count;
    for (unsigned i = 0; i < parts; i++) cc.hbm_read[ports[i]] += part_bytes;
    // byte j of the tile comes from chunk j / part_bytes (striped) at the same offset
    auto tile = [&](uint64_t j) -> uint8_t {
        unsigned i = (unsigned)(j / part_bytes);
        return ctx.port[ports[i]][f.hbm_addr + (j - i * part_bytes)];
    };
    uint8_t* w = ctx.cores[ctx.core].wbuf;
    const uint64_t packed = rows * k / 2, group_bytes = rows * groups;
DEQUANT:
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t c = 0; c < k; c++) {
#pragma HLS PIPELINE II = 1
            uint8_t byte = tile(r * (k / 2) + c / 2);
            ap_int<6> q = (c & 1) ? (byte >> 4) : (byte & 0xF);
            uint8_t g = tile(packed + r * groups + c / FLLM_INT4_GROUP);
            ap_int<6> z = g & 0xF;
            ap_int<5> m = ((g >> 4) & 0x7) + 1;
            ap_int<8> v = (q - z) * m;                   // within +-120
            w[addr + r * k + c] = (uint8_t)v.to_int();
        }
    }
    for (uint64_t i = 0; i < 4 * rows; i++) w[addr + rows * k + i] = tile(packed + group_bytes + i);
    return 0;
}

unsigned fllm_exec_ld(const MoveFields& f, RunContext& ctx) {
    if (f.wfmt) return ld_dequant(f, ctx);
    uint64_t rows, off;
    unsigned err = dyn_rows(f, ctx, rows, off);
    if (err) return err;
    uint8_t* dst = ctx.cores[ctx.core].buffer(f.buf);
    err = fllm_check_region(FLLM_BUF_BYTES[f.buf], f.buf_addr, rows, f.row_bytes, f.buf_stride, "LD buffer");
    if (err) return err;
    if (!rows || !f.row_bytes) return 0;
    CoreCounters& cc = ctx.cores[ctx.core].count;
    if (f.remote) {                       // on-chip copy from another core, same buffer and addresses
        if (f.remote_core >= FLLM_CORES || f.remote_core == ctx.core)
            FLLM_FAIL(FLLM_ERR_ADDRESS, "LD from remote core %u: cores are 0..%u and a core cannot be "
                      "its own remote", f.remote_core, FLLM_CORES - 1);
        const uint8_t* src = ctx.cores[f.remote_core].buffer(f.buf);
        copy_rows(dst + f.buf_addr, f.buf_stride, src + f.buf_addr, f.buf_stride, rows, f.row_bytes);
        return 0;
    }
    unsigned ports[MAX_STRIPE], parts;
    uint64_t part_bytes, part_rows, stride;
    err = hbm_parts(f, ctx, rows, off, ports, parts, part_bytes, part_rows, stride);
    if (err) return err;
    if (parts == 1) {
        copy_rows(dst + f.buf_addr, f.buf_stride, ctx.port[ports[0]] + off, stride, rows, f.row_bytes);
        cc.hbm_read[ports[0]] += rows * f.row_bytes;
        return 0;
    }
STRIPE:
    for (unsigned i = 0; i < parts; i++) {   // one row, chunk i from the i-th port after `channel`
        copy_rows(dst + f.buf_addr + i * part_bytes, part_bytes, ctx.port[ports[i]] + off, part_bytes, 1,
                  part_bytes);
        cc.hbm_read[ports[i]] += part_bytes;
    }
    return 0;
}

unsigned fllm_exec_st(const MoveFields& f, RunContext& ctx) {
    uint64_t rows, off;
    unsigned err = dyn_rows(f, ctx, rows, off);
    if (err) return err;
    const uint8_t* src = ctx.cores[ctx.core].buffer(f.buf);
    err = fllm_check_region(FLLM_BUF_BYTES[f.buf], f.buf_addr, rows, f.row_bytes, f.buf_stride, "ST buffer");
    if (err) return err;
    if (!rows || !f.row_bytes) return 0;
    unsigned ports[MAX_STRIPE], parts;
    uint64_t part_bytes, part_rows, stride;
    err = hbm_parts(f, ctx, rows, off, ports, parts, part_bytes, part_rows, stride);
    if (err) return err;
    copy_rows(ctx.port[ports[0]] + off, stride, src + f.buf_addr, f.buf_stride, rows, f.row_bytes);
    ctx.cores[ctx.core].count.hbm_written[ports[0]] += rows * f.row_bytes;
    return 0;
}

// The memory controller kernel: drains the core's LD and ST queues.  On hardware it runs free
// beside the other units; one m_axi adapter per HBM pseudo-channel port (bundle hbm<k> gives the
// port m_axi_hbm<k> of hw/design.py), 512-bit wide after widening.
void memctrl(uint8_t* hbm0, uint8_t* hbm1, uint8_t* hbm2, uint8_t* hbm3, uint8_t* hbm4,
             uint8_t* hbm5, uint8_t* hbm6, uint8_t* hbm7, unsigned* bytes_read_lo,
             unsigned* bytes_read_hi, unsigned* bytes_written_lo, unsigned* bytes_written_hi,
             RunContext& link) {
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
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    uint8_t* ports[FLLM_CHANNELS_PER_CORE] = {hbm0, hbm1, hbm2, hbm3, hbm4, hbm5, hbm6, hbm7};
    for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) link.port[k] = ports[k];
    fllm_unit_drain(FLLM_UNIT_LD, link);
    fllm_unit_drain(FLLM_UNIT_ST, link);
    const CoreCounters& cc = link.cores[link.core].count;
    uint64_t rd = 0, wr = 0;
    for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) {
        rd += cc.hbm_read[k];
        wr += cc.hbm_written[k];
    }
    *bytes_read_lo = (unsigned)rd;
    *bytes_read_hi = (unsigned)(rd >> 32);
    *bytes_written_lo = (unsigned)wr;
    *bytes_written_hi = (unsigned)(wr >> 32);
}
