// Packed dual INT8 MAC on an instantiated DSP48E2: the same function and latency as dsp48_packed.v.
//
// P <= Z + ((a << 18) + b) * w through the primitive's own pre-adder (A + D, INMODE = 00100), its
// ADREG/BREG, MREG and PREG pipeline registers (AREG = DREG = CREG = 0) and its Z-MUX
// (OPMODE[6:4]: 000 zero, 001 PCIN, 011 C; OPMODEREG = 0, so zsel acts at the P stage).  pcout is
// the primitive's PCOUT, for the next DSP48E2's PCIN over the dedicated cascade; p is its P, for
// fabric (the reduction node).  Fixed latency, no handshake: a, b, w sampled at edge e, P valid
// after edge e + 2.  Simulation uses our model dsp48e2.v; synthesis keeps the vendor primitive.
module dsp48_packed_prim (
    input  wire        clk,
    input  wire [7:0]  a,
    input  wire [7:0]  b,
    input  wire [7:0]  w,
    input  wire [1:0]  zsel,
    input  wire [47:0] c,
    input  wire [47:0] pcin,
    output wire [47:0] p,
    output wire [47:0] pcout
);
    wire [2:0] zmux = (zsel == 2'd1) ? 3'b001 : (zsel == 2'd2) ? 3'b011 : 3'b000;
    /* verilator lint_off PINCONNECTEMPTY */
    DSP48E2 #(
        .AREG(0), .DREG(0), .ADREG(1), .BREG(1), .MREG(1), .PREG(1), .CREG(0),
        .OPMODEREG(0), .ALUMODEREG(0), .INMODEREG(0), .CARRYINREG(0), .CARRYINSELREG(0),
        .ACASCREG(0), .BCASCREG(1),
        .AMULTSEL("AD"), .BMULTSEL("B"), .PREADDINSEL("A"), .A_INPUT("DIRECT"), .B_INPUT("DIRECT"),
        .USE_MULT("MULTIPLY"), .USE_SIMD("ONE48"), .USE_PATTERN_DETECT("NO_PATDET"),
        .USE_WIDEXOR("FALSE")
    ) dsp (
        .CLK(clk),
        .A({{4{a[7]}}, a, 18'd0}), .D({{19{b[7]}}, b}), .B({{10{w[7]}}, w}), .C(c), .PCIN(pcin),
        .ACIN(30'd0), .BCIN(18'd0), .CARRYCASCIN(1'b0), .CARRYIN(1'b0), .CARRYINSEL(3'b000),
        .MULTSIGNIN(1'b0),
        .INMODE(5'b00100), .OPMODE({2'b00, zmux, 4'b0101}), .ALUMODE(4'b0000),
        .CEA1(1'b0), .CEA2(1'b0), .CEAD(1'b1), .CEALUMODE(1'b0), .CEB1(1'b0), .CEB2(1'b1),
        .CEC(1'b0), .CECARRYIN(1'b0), .CECTRL(1'b0), .CED(1'b0), .CEINMODE(1'b0), .CEM(1'b1),
        .CEP(1'b1),
        .RSTA(1'b0), .RSTALLCARRYIN(1'b0), .RSTALUMODE(1'b0), .RSTB(1'b0), .RSTC(1'b0),
        .RSTCTRL(1'b0), .RSTD(1'b0), .RSTINMODE(1'b0), .RSTM(1'b0), .RSTP(1'b0),
        .P(p), .PCOUT(pcout),
        .ACOUT(), .BCOUT(), .CARRYCASCOUT(), .CARRYOUT(), .MULTSIGNOUT(), .OVERFLOW(),
        .PATTERNBDETECT(), .PATTERNDETECT(), .UNDERFLOW(), .XOROUT()
    );
    /* verilator lint_on PINCONNECTEMPTY */
endmodule
