// Overflow adjust unit (OAU): WP486 lane extraction of a packed P, and the MSP/LSP split of each lane.
//
// Purely combinational (no clock, no handshake).  lane_b = sext(P[17:0]); lane_a = sext(P[47:18])
// + P[17] (sign correction: a negative lane B borrows one from lane A).  Split, for use at an OAU
// point where both lanes lie in [-65024, 131071] (an LSP plus four INT8 products): with each lane
// taken as 18 bits, lane = msp * 2**16 + lsp, lsp = lane[15:0] (unsigned), msp = lane[17:16]
// (signed).  lsp_packed = lsp_a * 2**18 + lsp_b is what keeps cascading (next DSP48's C port);
// the MSPs go to the next DG's reduction node.
module csd_oau (
    input  wire [47:0]        p,
    output wire signed [30:0] lane_a,
    output wire signed [17:0] lane_b,
    output wire [47:0]        lsp_packed,
    output wire signed [1:0]  msp_a,
    output wire signed [1:0]  msp_b
);
    assign lane_b     = p[17:0];
    assign lane_a     = {p[47], p[47:18]} + {30'd0, p[17]};
    assign lsp_packed = {14'd0, lane_a[15:0], 2'b00, lane_b[15:0]};
    assign msp_a      = lane_a[17:16];
    assign msp_b      = lane_b[17:16];
endmodule
