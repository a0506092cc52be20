// Packed dual INT8 MAC (Xilinx WP486) left to inference: P <= Z + ((a << 18) + b) * w.
//
// Fixed-latency interface, no handshake, every register always enabled (no reset: like the DSP48E2
// data registers, contents are meaningful only for beats marked valid by the surrounding pipeline):
//   edge e   : a, b, w sampled; pre-adder AD = A + D = (a << 18) + b registered (27 bits, ADREG=1),
//              w sign-extended onto the 18-bit B port (BREG=1)
//   edge e+1 : M = AD * B registered (27 x 18 -> 45 bits, MREG=1)
//   edge e+2 : P = Z + sext48(M) registered (PREG=1), wraps modulo 2**48; pcout is the same value.
//   zsel, c, pcin are used combinationally at edge e+2 (OPMODEREG=0, CREG=0); the Z-MUX selects
//   0 (zsel=0, restart), PCIN (zsel=1, cascade) or C (zsel=2, fabric operand, e.g. an OAU's LSPs).
// Lanes in P: lane B (activation b) = sext(P[17:0]); lane A (activation a) = sext(P[47:18]) + P[17]
// (WP486 sign correction, done by csd_oau.v).
module dsp48_packed (
    input  wire              clk,
    input  wire [7:0]        a,      // int8, lane A (upper): A port holds a << 18
    input  wire [7:0]        b,      // int8, lane B (lower): D port
    input  wire [7:0]        w,      // int8 weight shared by both lanes: B port
    input  wire [1:0]        zsel,   // Z-MUX: 0 zero, 1 PCIN, 2 C
    input  wire [47:0]       c,
    input  wire [47:0]       pcin,
    output reg  [47:0]       p,      // P register
    output wire [47:0]       pcout   // PCOUT (= P), for the next DSP48's PCIN
);
    localparam [1:0] ZSEL_PCIN = 2'd1, ZSEL_C = 2'd2;      // anything else: Z = 0

    wire signed [26:0] a_port = {a[7], a, 18'b0};              // A[26:0] = a << 18
    wire signed [26:0] d_port = {{19{b[7]}}, b};               // D = sext(b)
    reg  signed [26:0] ad_r;
    reg  signed [17:0] b_r;
    reg  signed [44:0] m_r;
    wire        [47:0] z = (zsel == ZSEL_PCIN) ? pcin : (zsel == ZSEL_C) ? c : 48'd0;

    always @(posedge clk) begin
        ad_r <= a_port + d_port;
        b_r  <= {{10{w[7]}}, w};
        m_r  <= ad_r * b_r;
        p    <= z + {{3{m_r[44]}}, m_r};
    end
    assign pcout = p;
endmodule
