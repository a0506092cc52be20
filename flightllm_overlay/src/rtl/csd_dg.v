// CSD-chain DSP group (DG): two sparse MUXes and two cascaded packed-INT8 DSP48s (fixed PCOUT->PCIN).
//
// Fixed-latency interface (no handshake).  A beat is presented to every DG of the chain at the same
// clock edge 0.  Each DSP48's sparse MUX picks its activation pair act_a[idx], act_b[idx] out of the
// M = 16 inputs by its 4-bit index; the picked pair and the weight are then skewed so that DSP48 k of
// the chain (k = 2G, 2G+1) samples them at edge k, and its P holds the beat after edge k + 2
// (systolic cascade: one DSP48 per cycle).  zsel/c/pcin drive the first DSP48's Z-MUX and must be
// valid before edge 2G + 2 (they come from the previous DG's reduction node); the second DSP48
// always cascades (Z = PCIN).  p = pcout = P of the second DSP48, valid for the beat after edge 2G + 3
// (p goes to the reduction node through fabric, pcout over the dedicated cascade to the next DG).
module csd_dg #(
    parameter G        = 0,              // position of this DG in the chain (DSP48s 2G and 2G+1)
    parameter DSP_PRIM = 0               // 1: dsp48_packed_prim (DSP48E2 instances), 0: dsp48_packed
) (
    input  wire         clk,
    input  wire [127:0] act_a,           // lane A activations, 16 x int8, entry i at [8i+7:8i]
    input  wire [127:0] act_b,           // lane B activations, same layout
    input  wire [15:0]  w,               // weights: DSP48 2G at [7:0], 2G+1 at [15:8]
    input  wire [7:0]   idx,             // sparse-MUX indices: DSP48 2G at [3:0], 2G+1 at [7:4]
    input  wire [1:0]   zsel,            // Z-MUX of DSP48 2G (0 zero, 1 PCIN, 2 C)
    input  wire [47:0]  c,               // C operand of DSP48 2G
    input  wire [47:0]  pcin,            // cascade from the previous DG (its second DSP48's PCOUT)
    output wire [47:0]  p,               // P of the second DSP48 (to the reduction node)
    output wire [47:0]  pcout            // PCOUT of the second DSP48 (to the next DG's PCIN)
);
    // Sparse MUX: pick the activation pair each DSP48 multiplies.
    wire [23:0] sel0 = {w[7:0],  act_a[idx[3:0] * 8 +: 8], act_b[idx[3:0] * 8 +: 8]};
    wire [23:0] sel1 = {w[15:8], act_a[idx[7:4] * 8 +: 8], act_b[idx[7:4] * 8 +: 8]};
    wire [23:0] in0, in1;

    csd_delay #(.W(24), .D(2 * G))     skew0 (.clk(clk), .rst(1'b0), .d(sel0), .q(in0));
    csd_delay #(.W(24), .D(2 * G + 1)) skew1 (.clk(clk), .rst(1'b0), .d(sel1), .q(in1));

    /* verilator lint_off UNUSEDSIGNAL */
    wire [47:0] p0;                      // the first DSP48's P: it only cascades (pc0)
    /* verilator lint_on UNUSEDSIGNAL */
    wire [47:0] pc0;
    generate
        if (DSP_PRIM) begin : g_prim
            dsp48_packed_prim dsp0 (.clk(clk), .a(in0[15:8]), .b(in0[7:0]), .w(in0[23:16]),
                                    .zsel(zsel), .c(c), .pcin(pcin), .p(p0), .pcout(pc0));
            dsp48_packed_prim dsp1 (.clk(clk), .a(in1[15:8]), .b(in1[7:0]), .w(in1[23:16]),
                                    .zsel(2'd1), .c(48'd0), .pcin(pc0), .p(p), .pcout(pcout));
        end else begin : g_infer
            dsp48_packed dsp0 (.clk(clk), .a(in0[15:8]), .b(in0[7:0]), .w(in0[23:16]),
                               .zsel(zsel), .c(c), .pcin(pcin), .p(p0), .pcout(pc0));
            dsp48_packed dsp1 (.clk(clk), .a(in1[15:8]), .b(in1[7:0]), .w(in1[23:16]),
                               .zsel(2'd1), .c(48'd0), .pcin(pc0), .p(p), .pcout(pcout));
        end
    endgenerate
endmodule
