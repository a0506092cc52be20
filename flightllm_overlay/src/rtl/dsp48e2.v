// Behavioural model of the Xilinx DSP48E2 for the modes this design uses (UltraScale, UG579).
//
// For simulation only (Icarus, Verilator); synthesis keeps the vendor primitive (Yosys reads its
// blackbox from cells_xtra.v, Vivado its own).  Same module, port and attribute names as the
// primitive, so the instantiation in dsp48_packed_prim.v is the one Vivado would see.  Modelled,
// from UG579 (v1.11) chapter 2:
//   * A (30 bits; A[26:0] feeds the pre-adder), B (18), C (48), D (27), PCIN (48) inputs, each
//     register stage present or bypassed by its attribute: AREG (0/1: the A2 register),
//     BREG (0/1: B2), CREG, DREG, ADREG, MREG, PREG, OPMODEREG, ALUMODEREG, INMODEREG (0/1).
//   * Pre-adder AD = D + A[26:0] (27-bit two's complement, wraps), INMODE[2] = 1 enables D,
//     INMODE[1] = 1 forces A to 0, INMODE[3] = 1 subtracts (AD = D - A); AMULTSEL = "AD".
//   * Multiplier M = AD x B, 27 x 18 signed -> 45 bits, sign-extended to 48 (USE_MULT = "MULTIPLY").
//   * OPMODE[3:0] = 4'b0101 (X, Y = the multiplier's partial products) or 4'b0000 (X = Y = 0);
//     OPMODE[6:4] Z-MUX: 000 = 0, 001 = PCIN, 010 = P, 011 = C; OPMODE[8:7] W-MUX = 00 (0).
//   * ALUMODE = 4'b0000: P = Z + W + X + Y + CIN with CARRYIN = 0, modulo 2**48.  PCOUT = P.
//   * Synchronous, active-high resets RSTA/RSTB/RSTC/RSTD/RSTM/RSTP/RSTCTRL/RSTINMODE/RSTALUMODE,
//     and clock enables CEA2/CEB2/CEC/CED/CEAD/CEM/CEP/CECTRL/CEINMODE/CEALUMODE.
// Anything else (other attribute values, A/B cascade inputs, SIMD, pattern detect, other OPMODE or
// ALUMODE values presented at a clock edge) is outside the model: it sets `unsupported`, prints why
// and stops the simulation, rather than computing something the silicon would not.
/* verilator lint_off DECLFILENAME */
/* verilator lint_off UNUSEDPARAM */
/* verilator lint_off UNUSEDSIGNAL */
// (the primitive's full port and attribute list is kept, so the instantiation matches Vivado's)
module DSP48E2 #(
    parameter integer ACASCREG = 1, ADREG = 1, ALUMODEREG = 1, AREG = 1, BCASCREG = 1, BREG = 1,
    parameter integer CARRYINREG = 1, CARRYINSELREG = 1, CREG = 1, DREG = 1, INMODEREG = 1,
    parameter integer MREG = 1, OPMODEREG = 1, PREG = 1,
    parameter AMULTSEL = "A", A_INPUT = "DIRECT", BMULTSEL = "B", B_INPUT = "DIRECT",
    parameter PREADDINSEL = "A", USE_MULT = "MULTIPLY", USE_SIMD = "ONE48",
    parameter USE_PATTERN_DETECT = "NO_PATDET", USE_WIDEXOR = "FALSE"
) (
    output wire [29:0] ACOUT,
    output wire [17:0] BCOUT,
    output wire        CARRYCASCOUT,
    output wire [3:0]  CARRYOUT,
    output wire        MULTSIGNOUT,
    output wire        OVERFLOW,
    output wire [47:0] P,
    output wire        PATTERNBDETECT,
    output wire        PATTERNDETECT,
    output wire [47:0] PCOUT,
    output wire        UNDERFLOW,
    output wire [7:0]  XOROUT,
    input  wire [29:0] A,
    input  wire [29:0] ACIN,
    input  wire [3:0]  ALUMODE,
    input  wire [17:0] B,
    input  wire [17:0] BCIN,
    input  wire [47:0] C,
    input  wire        CARRYCASCIN,
    input  wire        CARRYIN,
    input  wire [2:0]  CARRYINSEL,
    input  wire        CEA1, CEA2, CEAD, CEALUMODE, CEB1, CEB2, CEC, CECARRYIN, CECTRL, CED,
    input  wire        CEINMODE, CEM, CEP,
    input  wire        CLK,
    input  wire [26:0] D,
    input  wire [4:0]  INMODE,
    input  wire        MULTSIGNIN,
    input  wire [8:0]  OPMODE,
    input  wire [47:0] PCIN,
    input  wire        RSTA, RSTALLCARRYIN, RSTALUMODE, RSTB, RSTC, RSTCTRL, RSTD, RSTINMODE,
    input  wire        RSTM, RSTP
);
    // -------------------------------------------------------------- attribute checks
    wire static_ok = (AREG == 0 || AREG == 1) && (BREG == 0 || BREG == 1) && (CREG == 0 || CREG == 1)
        && (DREG == 0 || DREG == 1) && (ADREG == 0 || ADREG == 1) && (MREG == 0 || MREG == 1)
        && (PREG == 0 || PREG == 1) && (OPMODEREG == 0 || OPMODEREG == 1)
        && (ALUMODEREG == 0 || ALUMODEREG == 1) && (INMODEREG == 0 || INMODEREG == 1)
        && AMULTSEL == "AD" && BMULTSEL == "B" && PREADDINSEL == "A" && A_INPUT == "DIRECT"
        && B_INPUT == "DIRECT" && USE_MULT == "MULTIPLY" && USE_SIMD == "ONE48"
        && USE_PATTERN_DETECT == "NO_PATDET" && USE_WIDEXOR == "FALSE";

    // -------------------------------------------------------------- input registers
    reg [26:0] a_r, d_r, ad_r;
    reg [17:0] b_r;
    reg [47:0] c_r, p_r;
    reg [44:0] m_r;
    reg [8:0]  opmode_r;
    reg [3:0]  alumode_r;
    reg [4:0]  inmode_r;

    wire [26:0] a_q      = (AREG == 1) ? a_r : A[26:0];
    wire [26:0] d_q      = (DREG == 1) ? d_r : D;
    wire [17:0] b_q      = (BREG == 1) ? b_r : B;
    wire [47:0] c_q      = (CREG == 1) ? c_r : C;
    wire [4:0]  inmode_q = (INMODEREG == 1) ? inmode_r : INMODE;
    wire [8:0]  opmode_q = (OPMODEREG == 1) ? opmode_r : OPMODE;
    wire [3:0]  alumode_q = (ALUMODEREG == 1) ? alumode_r : ALUMODE;

    // Pre-adder (27 bits, wraps): D (if enabled) plus or minus A (unless forced to 0).
    wire [26:0] pa   = inmode_q[1] ? 27'd0 : a_q;
    wire [26:0] pd   = inmode_q[2] ? d_q : 27'd0;
    wire [26:0] ad   = inmode_q[3] ? pd - pa : pd + pa;
    wire [26:0] ad_q = (ADREG == 1) ? ad_r : ad;

    // Multiplier, 27 x 18 signed -> 45 bits.
    wire signed [44:0] m    = $signed(ad_q) * $signed(b_q);
    wire [44:0]        m_q  = (MREG == 1) ? m_r : m;
    wire [47:0]        xy   = (opmode_q[3:0] == 4'b0101) ? {{3{m_q[44]}}, m_q} : 48'd0;

    // Z-MUX and ALU (ALUMODE 0000: Z + W + X + Y + CIN, CIN = 0, W = 0).
    wire [47:0] z = (opmode_q[6:4] == 3'b001) ? PCIN : (opmode_q[6:4] == 3'b010) ? p_r
                  : (opmode_q[6:4] == 3'b011) ? c_q : 48'd0;
    wire [47:0] alu = z + xy;

    wire dyn_ok = (opmode_q[3:0] == 4'b0101 || opmode_q[3:0] == 4'b0000) && opmode_q[8:7] == 2'b00
        && (opmode_q[6:4] == 3'b000 || opmode_q[6:4] == 3'b001 || opmode_q[6:4] == 3'b010
            || opmode_q[6:4] == 3'b011)
        && alumode_q == 4'b0000 && inmode_q[0] == 1'b0 && inmode_q[4] == 1'b0 && CARRYIN == 1'b0
        && CARRYINSEL == 3'b000;
    reg unsupported;
    initial unsupported = 1'b0;

    always @(posedge CLK) begin
        if (RSTA) a_r <= 27'd0; else if (CEA2) a_r <= A[26:0];
        if (RSTD) d_r <= 27'd0; else if (CED) d_r <= D;
        if (RSTD) ad_r <= 27'd0; else if (CEAD) ad_r <= ad;
        if (RSTB) b_r <= 18'd0; else if (CEB2) b_r <= B;
        if (RSTC) c_r <= 48'd0; else if (CEC) c_r <= C;
        if (RSTM) m_r <= 45'd0; else if (CEM) m_r <= m;
        if (RSTCTRL) opmode_r <= 9'd0; else if (CECTRL) opmode_r <= OPMODE;
        if (RSTALUMODE) alumode_r <= 4'd0; else if (CEALUMODE) alumode_r <= ALUMODE;
        if (RSTINMODE) inmode_r <= 5'd0; else if (CEINMODE) inmode_r <= INMODE;
        if (RSTP) p_r <= 48'd0; else if (CEP) p_r <= alu;
        if (!static_ok || !dyn_ok) begin
            if (!unsupported)
                $display("DSP48E2 model %m: unsupported %s (OPMODE=%b ALUMODE=%b INMODE=%b)",
                         static_ok ? "dynamic control" : "attribute", opmode_q, alumode_q, inmode_q);
            unsupported <= 1'b1;
            $finish;
        end
    end

    assign P       = (PREG == 1) ? p_r : alu;
    assign PCOUT   = P;
    assign ACOUT   = 30'd0;
    assign BCOUT   = 18'd0;
    assign CARRYCASCOUT = 1'b0;
    assign CARRYOUT = 4'd0;
    assign MULTSIGNOUT = m_q[44];
    assign OVERFLOW = 1'b0;
    assign UNDERFLOW = 1'b0;
    assign PATTERNBDETECT = 1'b0;
    assign PATTERNDETECT = 1'b0;
    assign XOROUT = 8'd0;
endmodule
/* verilator lint_on UNUSEDSIGNAL */
/* verilator lint_on UNUSEDPARAM */
/* verilator lint_on DECLFILENAME */
