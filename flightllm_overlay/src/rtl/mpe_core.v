// MPE compute core: an array of configurable sparse DSP chains (csd_chain.v), one pass per cycle.
//
// Fixed-latency pass interface (no handshake; the kernel wrapper mpe_axis.v drives it).  A *pass*
// gives every chain one chain-beat: L = 16 kept INT8 weights with their 4-bit indices, the beat's
// N:16 code (log2(N) - 1) and ROW0, the first of the 16/N output rows (of the current 16-output
// block-row) its segments compute.  Slot s of the pass (fields at [s*W +: W]) feeds:
//   MM  (in_mode = 0): chain q = p*COLS + s of every team p < ROWS/2, with lane A/B = activation
//       rows 2p, 2p+1 of block in_j of the activation buffer in_bank (rows >= in_lanes read as 0);
//       slots 0 .. COLS-1 are used.  With in_direct = 1 only team 0 runs, on in_act_a/in_act_b
//       (the one-chain OPERAND beat of docs/mpe_stream.md).
//   MV  (in_mode = 1): chain s < MV_COLS, in team t = s / MV_TEAM, lane A = block in_j0[t] + dj[s]
//       of MV row in_row of the MV buffer in_bank (lane B = 0); a team covers one block-row, its MV_TEAM chains share its
//       window of 8 activation blocks.
// Every chain accumulates its segment results into a bank of 16 (lane A, lane B) INT32 words at
// rows ROW0 + s.  On the pass with in_last = 1 the banks of each team are summed into the result
// (out_valid for one cycle, L + 4 cycles after that pass was presented) and cleared:
//   MM: out_res word r*16 + c = output row c of the block-row for activation row r < ROWS.
//   MV: out_res word t*16 + c = output row c of team t's block-row (t < MV_COLS / MV_TEAM).
// Counters (what the simulator's macs/fixed_macs count): per enabled slot with kval valid
// columns, macs += lanes * kval and fixed_macs += lanes * kval * 16 / N (lanes: in_lanes for MM,
// 1 for MV).  rst clears the counters, the pipelines' valid bits and the banks.
// Activation buffer writes (ld_*): one 16-byte block per cycle, MM buffers (2 banks x KB blocks x
// ROWS rows) or MV buffers (2 banks x MV_ROWS rows x KB blocks); a write may overlap passes on the
// other bank.  The numpy model of this whole core is flightllm_overlay/hw/mpe_model.py.
module mpe_core #(
    parameter ROWS     = 8,          // MM rows per pass (lane pairs: ROWS/2 teams)
    parameter COLS     = 2,          // MM chains per team (chain-beats per MM pass)
    parameter L        = 16,         // DSP48s per chain (the MPE's k per pass); 16
    parameter MV_COLS  = 32,         // MV chains
    parameter MV_TEAM  = 16,         // MV chains per team (one block-row of 16 outputs per team)
    parameter MV_ROWS  = 16,         // MV activation rows held
    parameter KB       = 16,         // activation blocks (16 columns each) held per row: k <= 16*KB
    parameter OAU_MIN  = 4,          // OAU threshold of every chain
    parameter DSP_PRIM = 0           // 1: chains built on the DSP48E2 model (dsp48e2.v)
) (
    input  wire                        clk,
    input  wire                        rst,
    // activation buffer writes
    input  wire                        ld_en,
    input  wire                        ld_mv,
    input  wire                        ld_bank,
    input  wire [7:0]                  ld_row,
    input  wire [JW-1:0]               ld_j,
    input  wire [127:0]                ld_data,
    // pass
    input  wire                        in_valid,
    input  wire                        in_mode,
    input  wire                        in_direct,
    input  wire                        in_last,
    input  wire                        in_bank,
    input  wire [JW-1:0]               in_j,
    input  wire [TMV*JW-1:0]           in_j0,
    input  wire [4:0]                  in_row,
    input  wire [8:0]                  in_lanes,
    input  wire [127:0]                in_act_a,
    input  wire [127:0]                in_act_b,
    input  wire [NS*L*8-1:0]           in_w,
    input  wire [NS*L*4-1:0]           in_idx,
    input  wire [NS*2-1:0]             in_code,
    input  wire [NS*4-1:0]             in_r0,
    input  wire [NS*3-1:0]             in_dj,
    input  wire [NS-1:0]               in_en,
    input  wire [NS*5-1:0]             in_kval,
    // results
    output reg                         out_valid,
    output reg                         out_mode,
    output reg  [NRES*32-1:0]          out_res,
    output reg  [63:0]                 macs,
    output reg  [63:0]                 fixed_macs
);
    localparam TEAMS = ROWS / 2;
    localparam TMV   = MV_COLS / MV_TEAM;
    localparam NS    = (COLS > MV_COLS) ? COLS : MV_COLS;
    localparam NMM   = TEAMS * COLS;
    localparam NCH   = (NMM > MV_COLS) ? NMM : MV_COLS;
    localparam NRES  = (ROWS > TMV) ? ROWS * 16 : TMV * 16;
    localparam JW    = (KB > 1) ? $clog2(KB) : 1;
    localparam LAT   = L + 3;                         // csd_chain latency

    // ---------------------------------------------------------------- activation buffers
    reg [ROWS*128-1:0] act_mm [0:2*KB-1];
    reg [127:0]        act_mv [0:2*MV_ROWS*KB-1];
    always @(posedge clk) begin
        if (ld_en && !ld_mv && ld_row < ROWS)
            act_mm[{ld_bank, ld_j}][ld_row * 128 +: 128] <= ld_data;
        if (ld_en && ld_mv && ld_row < MV_ROWS)
            act_mv[({31'd0, ld_bank} * MV_ROWS + {24'd0, ld_row}) * KB + {{(32 - JW){1'b0}}, ld_j}] <= ld_data;
    end
    wire [ROWS*128-1:0] mm_word = act_mm[{in_bank, in_j}];

    // ---------------------------------------------------------------- pass control pipeline
    // {last, mode} of each pass, aligned with the chains' outputs (LAT cycles).
    wire [1:0] ctl_d;
    csd_delay #(.W(2), .D(LAT + 1)) ctl_pipe (.clk(clk), .rst(rst),
        .d({in_valid & in_last, in_mode}), .q(ctl_d));
    wire last_d = ctl_d[1];
    wire mode_d = ctl_d[0];

    // ---------------------------------------------------------------- chains and banks
    wire [NCH*16*32-1:0] bank_a_w, bank_b_w;           // bank + this cycle's contribution
    genvar q, c;
    generate
        for (q = 0; q < NCH; q = q + 1) begin : g_ch
            localparam P = q / COLS;                    // MM team
            localparam S = q % COLS;                    // MM slot
            localparam T = q / MV_TEAM;                 // MV team
            wire mm_on = (q < NMM);
            wire mv_on = (q < MV_COLS);
            // MM activation pair of team P
            wire [127:0] mm_a = (in_direct ? in_act_a : (2 * P     < in_lanes ? mm_word[(2 * P % ROWS) * 128 +: 128] : 128'd0));
            wire [127:0] mm_b = (in_direct ? in_act_b : (2 * P + 1 < in_lanes ? mm_word[((2 * P + 1) % ROWS) * 128 +: 128] : 128'd0));
            // MV activation: block j0[T] + dj of row in_row
            wire [2:0]   dj   = in_dj[(q % NS) * 3 +: 3];
            wire [31:0]  mv_j = {{(32 - JW){1'b0}}, in_j0[(T % (TMV > 0 ? TMV : 1)) * JW +: JW]} + {29'd0, dj};
            wire [127:0] mv_a = (mv_j < KB && in_row < MV_ROWS)
                              ? act_mv[({31'd0, in_bank} * MV_ROWS + {27'd0, in_row}) * KB + {{(32 - JW){1'b0}}, mv_j[JW-1:0]}]
                              : 128'd0;
            wire         run  = in_valid & (in_mode ? mv_on : (mm_on & (!in_direct | (P == 0))));
            wire [31:0]  slot = in_mode ? q : S;
            wire [L*8-1:0] w  = in_w[(slot % NS) * L * 8 +: L * 8];
            wire [L*4-1:0] ix = in_idx[(slot % NS) * L * 4 +: L * 4];
            wire [1:0]   code = in_code[(slot % NS) * 2 +: 2];
            wire [3:0]   r0   = in_r0[(slot % NS) * 4 +: 4];

            wire [3:0] r0_d;
            csd_delay #(.W(4), .D(LAT + 1)) r0_pipe (.clk(clk), .rst(rst), .d(r0), .q(r0_d));

            wire        ovalid;
            wire [1:0]  ocode;
            wire [L/2*32-1:0] oa, ob;
            csd_chain #(.L(L), .OAU_MIN(OAU_MIN), .DSP_PRIM(DSP_PRIM)) chain (
                .clk(clk), .rst(rst), .in_valid(run), .in_code(code), .in_w(w), .in_idx(ix),
                .in_act_a(in_mode ? mv_a : mm_a), .in_act_b(in_mode ? 128'd0 : mm_b),
                .out_valid(ovalid), .out_code(ocode), .out_a(oa), .out_b(ob));

            // Segment s of the beat (s < 16/N) adds to bank row r0 + s.  rows per beat = 8 >> code.
            wire [2:0] sh = 3'd3 - {1'b0, ocode};      // log2(16/N)
            reg  [31:0] bank_a [0:15];
            reg  [31:0] bank_b [0:15];
            for (c = 0; c < 16; c = c + 1) begin : g_row
                localparam [3:0] CI = c;
                wire [3:0]  seg  = CI & ((4'd1 << sh) - 4'd1);
                wire        hit  = ovalid && ((CI >> sh) == (r0_d >> sh)) && ({1'b0, seg} < L / 2);
                wire [31:0] ca   = hit ? oa[seg * 32 +: 32] : 32'd0;
                wire [31:0] cb   = hit ? ob[seg * 32 +: 32] : 32'd0;
                assign bank_a_w[(q * 16 + c) * 32 +: 32] = bank_a[c] + ca;
                assign bank_b_w[(q * 16 + c) * 32 +: 32] = bank_b[c] + cb;
                always @(posedge clk) begin
                    if (rst || last_d) begin
                        bank_a[c] <= 32'd0;
                        bank_b[c] <= 32'd0;
                    end else begin
                        bank_a[c] <= bank_a_w[(q * 16 + c) * 32 +: 32];
                        bank_b[c] <= bank_b_w[(q * 16 + c) * 32 +: 32];
                    end
                end
            end
        end
    endgenerate

    // ---------------------------------------------------------------- team reduction
    reg [NRES*32-1:0] sum_mm, sum_mv;
    integer p, s, r, t, u;
    always @* begin
        sum_mm = {NRES*32{1'b0}};
        for (p = 0; p < TEAMS; p = p + 1)
            for (r = 0; r < 16; r = r + 1)
                for (s = 0; s < COLS; s = s + 1) begin
                    sum_mm[((2 * p) * 16 + r) * 32 +: 32] = sum_mm[((2 * p) * 16 + r) * 32 +: 32]
                        + bank_a_w[((p * COLS + s) * 16 + r) * 32 +: 32];
                    sum_mm[((2 * p + 1) * 16 + r) * 32 +: 32] = sum_mm[((2 * p + 1) * 16 + r) * 32 +: 32]
                        + bank_b_w[((p * COLS + s) * 16 + r) * 32 +: 32];
                end
        sum_mv = {NRES*32{1'b0}};
        for (t = 0; t < TMV; t = t + 1)
            for (r = 0; r < 16; r = r + 1)
                for (u = 0; u < MV_TEAM; u = u + 1)
                    sum_mv[(t * 16 + r) * 32 +: 32] = sum_mv[(t * 16 + r) * 32 +: 32]
                        + bank_a_w[((t * MV_TEAM + u) * 16 + r) * 32 +: 32];
    end

    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
            out_mode  <= 1'b0;
        end else begin
            out_valid <= last_d;
            out_mode  <= mode_d;
        end
        if (last_d)
            out_res <= mode_d ? sum_mv : sum_mm;
    end

    // ---------------------------------------------------------------- counters
    reg [31:0] kept, slots, kv;
    integer k;
    always @* begin
        kept  = 32'd0;
        slots = 32'd0;
        kv    = 32'd0;
        for (k = 0; k < NS; k = k + 1)
            if (in_en[k] && (in_mode || k < COLS)) begin
                kv    = {27'd0, in_kval[k * 5 +: 5]};
                kept  = kept  + kv;
                slots = slots + (kv << (2'd3 - in_code[k * 2 +: 2]));
            end
    end
    wire [8:0] lanes = in_mode ? 9'd1 : in_lanes;
    always @(posedge clk) begin
        if (rst) begin
            macs       <= 64'd0;
            fixed_macs <= 64'd0;
        end else if (in_valid) begin
            macs       <= macs + kept * lanes;
            fixed_macs <= fixed_macs + slots * lanes;
        end
    end
endmodule
