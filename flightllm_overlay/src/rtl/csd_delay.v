// Delay line of D registers (D = 0: a wire), W bits wide; rst clears it (tie low for data paths).
//
// Fixed latency: q shows, after clock edge e + D - 1, what d held at edge e.  Synchronous reset.
module csd_delay #(
    parameter W = 1,
    parameter D = 1
) (
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire         clk,             // unused when D = 0
    input  wire         rst,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [W-1:0] d,
    output wire [W-1:0] q
);
    generate
        if (D == 0) begin : g_wire
            assign q = d;
        end else begin : g_regs
            reg [W-1:0] sr [0:D-1];
            integer i;
            always @(posedge clk) begin
                if (rst) begin
                    for (i = 0; i < D; i = i + 1) sr[i] <= {W{1'b0}};
                end else begin
                    sr[0] <= d;
                    for (i = 1; i < D; i = i + 1) sr[i] <= sr[i-1];
                end
            end
            assign q = sr[D-1];
        end
    endgenerate
endmodule
