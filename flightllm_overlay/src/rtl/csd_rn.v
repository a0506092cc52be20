// CSD-chain reduction node (RN) after DG G: emits a segment's result, or passes / OAU-splits the cascade.
//
// Fixed-latency interface (no handshake).  p (the DG's PCOUT), code and msp_in_* belong to the same
// beat (valid after edge 2G + 3 for a beat presented at edge 0).  code is the beat's FSB code as
// log2(N) - 1 (0: 2:16, 1: 4:16, 2: 8:16, 3: 16:16).  With END = 2(G+1) DSP48s up to here:
//   OUT  (END % N == 0): the segment ends; res_a/res_b <= lane + msp_in * 2**16 (32-bit, registered,
//        valid after edge 2G + 4); the next DG restarts (zsel_next = 0) and the MSP chain clears.
//   OAU  (END % 4 == 0, N > OAU_MIN, not OUT): csd_oau splits the lanes; zsel_next = C with
//        c_next = the re-packed LSPs; msp_out = msp_in + this OAU's MSPs (8-bit, per lane).
//   PASS (otherwise): zsel_next = PCIN, msp_out = msp_in.
// zsel_next/c_next are combinational (to DG G+1's first DSP48, used at edge 2G + 4); msp_out_* go
// through two registers (one DG = two cycles), so they meet the beat's p at RN G+1.
module csd_rn #(
    parameter G       = 0,
    parameter OAU_MIN = 4                // OAU active in segments longer than this many DSP48s
) (
    input  wire              clk,
    input  wire [47:0]       p,
    input  wire [1:0]        code,
    input  wire [7:0]        msp_in_a,
    input  wire [7:0]        msp_in_b,
    output wire [1:0]        zsel_next,
    output wire [47:0]       c_next,
    output reg  [7:0]        msp_out_a,
    output reg  [7:0]        msp_out_b,
    output reg  [31:0]       res_a,
    output reg  [31:0]       res_b
);
    localparam [15:0] END = 2 * (G + 1);
    localparam [1:0] ZSEL_ZERO = 2'd0, ZSEL_PCIN = 2'd1, ZSEL_C = 2'd2;

    wire [15:0] n       = 16'd2 << code;
    wire        seg_end = (END & (n - 16'd1)) == 16'd0;
    wire        oau_pt  = (END[1:0] == 2'b00) && (n > OAU_MIN) && !seg_end;

    wire signed [30:0] lane_a;
    wire signed [17:0] lane_b;
    wire signed [1:0]  msp_a, msp_b;
    csd_oau oau (.p(p), .lane_a(lane_a), .lane_b(lane_b), .lsp_packed(c_next),
                 .msp_a(msp_a), .msp_b(msp_b));

    assign zsel_next = seg_end ? ZSEL_ZERO : oau_pt ? ZSEL_C : ZSEL_PCIN;

    wire [7:0] msp_next_a = seg_end ? 8'd0 : oau_pt ? msp_in_a + {{6{msp_a[1]}}, msp_a} : msp_in_a;
    wire [7:0] msp_next_b = seg_end ? 8'd0 : oau_pt ? msp_in_b + {{6{msp_b[1]}}, msp_b} : msp_in_b;
    reg  [7:0] msp_mid_a, msp_mid_b;

    always @(posedge clk) begin
        msp_mid_a <= msp_next_a;
        msp_mid_b <= msp_next_b;
        msp_out_a <= msp_mid_a;
        msp_out_b <= msp_mid_b;
        res_a     <= {lane_a[30], lane_a} + {{8{msp_in_a[7]}}, msp_in_a, 16'd0};
        res_b     <= {{14{lane_b[17]}}, lane_b} + {{8{msp_in_b[7]}}, msp_in_b, 16'd0};
    end
endmodule
