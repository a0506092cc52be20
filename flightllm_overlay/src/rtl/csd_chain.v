// Configurable sparse DSP chain (CSD-chain) top: L packed-INT8 DSP48s in L/2 DGs with RNs and OAUs.
//
// Fixed-latency streaming interface, one beat per clock, no backpressure (valid only):
//   in_valid    beat present this cycle (sampled at the rising edge, call it edge 0)
//   in_code     the beat's FSB code, log2(N) - 1: 0 = 2:16, 1 = 4:16, 2 = 8:16, 3 = 16:16 (dense);
//               N must divide L (other beats give zeros)
//   in_w        L x int8, DSP48 k's weight at [8k+7:8k]; segment j (one output) = DSP48s jN .. jN+N-1
//   in_idx      L x 4-bit sparse-MUX indices, DSP48 k's at [4k+3:4k] (dense: k % 16)
//   in_act_a/b  the two activation vectors sharing the weights (lanes A and B), 16 x int8 each
//   out_valid   high LATENCY = L + 3 cycles after in_valid (after edge L + 3), with out_code
//   out_a/out_b L/2 x int32: slot j (at [32j+31:32j]) = sum over segment j of w * act[idx], for
//               j < L/N; slots j >= L/N are 0.  Outputs are meaningful only while out_valid is high.
// Every beat carries its own code (it travels with the data), so codes may change beat by beat.
// rst (synchronous, active high) clears the valid and code pipelines; the data path has no reset.
// OAU_MIN: segments longer than OAU_MIN DSP48s use an OAU every 4 DSP48s.  The default 4 is exact
// for the full INT8 range; 8 is the paper's rule (wrong only when eight (-128)*(-128) products meet).
// The numpy model flightllm_overlay/hw/sparse_dsp_chain.py (CSDChain(L, oau_threshold=OAU_MIN)) is the
// reference for every output bit.
module csd_chain #(
    parameter L       = 16,              // DSP48s, a multiple of 4
    parameter OAU_MIN = 4,
    parameter DSP_PRIM = 0               // 1: DSP48s are the DSP48E2 model (dsp48e2.v), 0: inferred
) (
    input  wire                clk,
    input  wire                rst,
    input  wire                in_valid,
    input  wire [1:0]          in_code,
    input  wire [L*8-1:0]      in_w,
    input  wire [L*4-1:0]      in_idx,
    input  wire [127:0]        in_act_a,
    input  wire [127:0]        in_act_b,
    output wire                out_valid,
    output wire [1:0]          out_code,
    output reg  [L/2*32-1:0]   out_a,
    output reg  [L/2*32-1:0]   out_b
);
    localparam NDG     = L / 2;
    localparam LATENCY = L + 3;

    // The beat's {valid, code} travels alongside it: cv[e + 1] holds it after edge e.
    wire [2:0] cv [0:LATENCY + 1];
    assign cv[0] = {in_valid, in_code};
    genvar s;
    generate
        for (s = 1; s <= LATENCY + 1; s = s + 1) begin : g_cfg
            csd_delay #(.W(3), .D(1)) stage (.clk(clk), .rst(rst), .d(cv[s - 1]), .q(cv[s]));
        end
    endgenerate
    assign out_valid = cv[LATENCY + 1][2];
    assign out_code  = cv[LATENCY + 1][1:0];

    // The last DG's cascade, C, Z-MUX and MSP outputs have no next DG to feed.
    /* verilator lint_off UNUSEDSIGNAL */
    wire [NDG*48-1:0] pout, pcout, c_next;
    wire [NDG*2-1:0]  zsel_next;
    wire [NDG*8-1:0]  msp_a, msp_b;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [NDG*32-1:0] res_a, res_b, resd_a, resd_b;

    genvar g;
    generate
        for (g = 0; g < NDG; g = g + 1) begin : g_dg
            wire [1:0]  zsel = (g == 0) ? 2'd0  : zsel_next[(g > 0 ? g - 1 : 0) * 2 +: 2];
            wire [47:0] c    = (g == 0) ? 48'd0 : c_next[(g > 0 ? g - 1 : 0) * 48 +: 48];
            wire [47:0] pcin = (g == 0) ? 48'd0 : pcout[(g > 0 ? g - 1 : 0) * 48 +: 48];
            wire [7:0]  mia  = (g == 0) ? 8'd0  : msp_a[(g > 0 ? g - 1 : 0) * 8 +: 8];
            wire [7:0]  mib  = (g == 0) ? 8'd0  : msp_b[(g > 0 ? g - 1 : 0) * 8 +: 8];

            csd_dg #(.G(g), .DSP_PRIM(DSP_PRIM)) dg (
                .clk(clk), .act_a(in_act_a), .act_b(in_act_b),
                .w(in_w[g * 16 +: 16]), .idx(in_idx[g * 8 +: 8]),
                .zsel(zsel), .c(c), .pcin(pcin), .p(pout[g * 48 +: 48]), .pcout(pcout[g * 48 +: 48]));

            // The beat reaches RN g after edge 2g + 3: its code is in cv[2g + 4].
            csd_rn #(.G(g), .OAU_MIN(OAU_MIN)) rn (
                .clk(clk), .p(pout[g * 48 +: 48]), .code(cv[2 * g + 4][1:0]),
                .msp_in_a(mia), .msp_in_b(mib),
                .zsel_next(zsel_next[g * 2 +: 2]), .c_next(c_next[g * 48 +: 48]),
                .msp_out_a(msp_a[g * 8 +: 8]), .msp_out_b(msp_b[g * 8 +: 8]),
                .res_a(res_a[g * 32 +: 32]), .res_b(res_b[g * 32 +: 32]));

            // RN g's result is valid after edge 2g + 4; align every RN to edge L + 2.
            csd_delay #(.W(64), .D(L - 2 - 2 * g)) deskew (
                .clk(clk), .rst(1'b0), .d({res_a[g * 32 +: 32], res_b[g * 32 +: 32]}),
                .q({resd_a[g * 32 +: 32], resd_b[g * 32 +: 32]}));
        end
    endgenerate

    // Output slots: slot j takes RN (j+1)N/2 - 1 for the beat's N (code in cv[L + 3] after edge L + 2).
    wire [1:0] ocode = cv[L + 3][1:0];
    wire [NDG*32-1:0] mux_a, mux_b;
    genvar j;
    generate
        for (j = 0; j < NDG; j = j + 1) begin : g_slot
            wire [31:0] a2, a4, a8, a16, b2, b4, b8, b16;
            assign a2 = resd_a[j * 32 +: 32];
            assign b2 = resd_b[j * 32 +: 32];
            if ((j + 1) * 2 <= NDG) begin : g4
                assign a4 = resd_a[((j + 1) * 2 - 1) * 32 +: 32];
                assign b4 = resd_b[((j + 1) * 2 - 1) * 32 +: 32];
            end else begin : g4z
                assign a4 = 32'd0;
                assign b4 = 32'd0;
            end
            if ((j + 1) * 4 <= NDG) begin : g8
                assign a8 = resd_a[((j + 1) * 4 - 1) * 32 +: 32];
                assign b8 = resd_b[((j + 1) * 4 - 1) * 32 +: 32];
            end else begin : g8z
                assign a8 = 32'd0;
                assign b8 = 32'd0;
            end
            if ((j + 1) * 8 <= NDG) begin : g16
                assign a16 = resd_a[((j + 1) * 8 - 1) * 32 +: 32];
                assign b16 = resd_b[((j + 1) * 8 - 1) * 32 +: 32];
            end else begin : g16z
                assign a16 = 32'd0;
                assign b16 = 32'd0;
            end
            assign mux_a[j * 32 +: 32] = ocode == 2'd0 ? a2 : ocode == 2'd1 ? a4 : ocode == 2'd2 ? a8 : a16;
            assign mux_b[j * 32 +: 32] = ocode == 2'd0 ? b2 : ocode == 2'd1 ? b4 : ocode == 2'd2 ? b8 : b16;
        end
    endgenerate

    always @(posedge clk) begin
        out_a <= mux_a;
        out_b <= mux_b;
    end
endmodule
