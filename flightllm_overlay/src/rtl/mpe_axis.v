// MPE kernel: mpe_core behind the AXI4-Stream links of docs/mpe_stream.md and an s_axilite control block.
//
// Links (512-bit TDATA, TLAST, normal TVALID/TREADY handshake; byte 63 of an `op` beat is its KIND):
//   INSN    0x01  counts an instruction; byte 21 bit 0 = 0 (docs/mpe_stream.md's one-chain format):
//                 macs/fixed_macs are taken from bytes 0..7/8..15; = 1 (the parallel format of
//                 docs/mpe_rtl.md): the core counts them from the PASS beats.
//   OPERAND 0x02  one chain-beat with its own activations (docs/mpe_stream.md): a pass of team 0.
//   ACT     0x03  one activation block: bytes 0..15 the 16 INT8 values, byte 56 row, bytes 57..58
//                 block j, byte 59 bit 0 MM bank, bit 1 MV buffer.
//   PASS    0x04  two slots of a parallel pass (bytes 0..25 slot s0, 26..51 slot s0+1: W[16],
//                 IDX[8] two per byte low nibble first, byte 24 = code | en << 2 | dj << 3,
//                 byte 25 = r0 | (kval - 1) << 4); byte 52 = mode | last << 1 | bank << 2,
//                 bytes 53..54 j, byte 55 MV row, bytes 56..57 lanes, byte 58 s0, bytes 59..60 the
//                 j0 of team s0 / 16.  TLAST ends the pass: it then goes to the core.
//   END     0x0F  the run is over: ap_done once every result has left.  Any other KIND is a
//                 protocol error (status bit 0), handled like END.
// `res`: per result tile, in order, one 512-bit beat per 16 INT32 words: 2 beats for an OPERAND
// pass (lane A, lane B), ROWS for an MM pass (activation row r = beat r), MV_COLS / MV_TEAM for MV
// (team t's 16 outputs = beat t);
// TLAST on a tile's last beat.  Input is held (s_op_tready low) while TB tiles are owed.
// Control (ap_ctrl_hs at 0x00: bit 0 ap_start, 1 ap_done (clear on read), 2 ap_idle, 3 ap_ready);
// read-only 64-bit counters as lo/hi words at the offsets hw/design.py gives the mpe kernel:
// insns 0x10/0x18, macs 0x20/0x28, fixed_macs 0x30/0x38; status 0x40 (bit 0 protocol error).
// ap_start resets the core (counters from 0).
module mpe_axis #(
    parameter ROWS     = 8,
    parameter COLS     = 2,
    parameter MV_COLS  = 32,
    parameter MV_TEAM  = 16,
    parameter MV_ROWS  = 16,
    parameter KB       = 16,
    parameter OAU_MIN  = 4,
    parameter DSP_PRIM = 0,
    parameter TB       = 4            // result tiles buffered
) (
    input  wire          ap_clk,
    input  wire          ap_rst_n,
    input  wire [511:0]  op_tdata,
    input  wire          op_tvalid,
    output wire          op_tready,
    input  wire          op_tlast,
    output wire [511:0]  res_tdata,
    output wire          res_tvalid,
    input  wire          res_tready,
    output wire          res_tlast,
    input  wire [11:0]   s_axi_control_awaddr,
    input  wire          s_axi_control_awvalid,
    output wire          s_axi_control_awready,
    input  wire [31:0]   s_axi_control_wdata,
    input  wire [3:0]    s_axi_control_wstrb,
    input  wire          s_axi_control_wvalid,
    output wire          s_axi_control_wready,
    output wire [1:0]    s_axi_control_bresp,
    output reg           s_axi_control_bvalid,
    input  wire          s_axi_control_bready,
    input  wire [11:0]   s_axi_control_araddr,
    input  wire          s_axi_control_arvalid,
    output wire          s_axi_control_arready,
    output reg  [31:0]   s_axi_control_rdata,
    output wire [1:0]    s_axi_control_rresp,
    output reg           s_axi_control_rvalid,
    input  wire          s_axi_control_rready
);
    localparam L     = 16;
    localparam TMV   = MV_COLS / MV_TEAM;
    localparam NS    = (COLS > MV_COLS) ? COLS : MV_COLS;
    localparam NRES  = (ROWS > TMV) ? ROWS * 16 : TMV * 16;
    localparam JW    = (KB > 1) ? $clog2(KB) : 1;
    localparam TBW   = (TB > 1) ? $clog2(TB) : 1;
    localparam [11:0] REG_CTRL = 12'h000, REG_INSNS = 12'h010, REG_MACS = 12'h020,
                      REG_FIXED = 12'h030, REG_STATUS = 12'h040;
    localparam [7:0] K_INSN = 8'h01, K_OPERAND = 8'h02, K_ACT = 8'h03, K_PASS = 8'h04, K_END = 8'h0F;

    wire rst = !ap_rst_n;

    // ---------------------------------------------------------------- control state
    reg        running, ending, done_flag, proto_err, start_pulse;
    reg [63:0] insns, ext_macs, ext_fixed;
    reg [TBW:0] owed;                                  // tiles issued and not yet sent
    reg        aw_ok, w_ok;
    reg [11:0] awaddr_q;
    reg [31:0] wdata_q;
    wire       rd_fire = s_axi_control_rvalid && s_axi_control_rready;
    wire       ar_fire = s_axi_control_arvalid && s_axi_control_arready;
    wire [7:0] kind = op_tdata[511:504];
    assign op_tready = running && !ending && !start_pulse && (owed < TB);
    wire       take  = op_tvalid && op_tready;

    // ---------------------------------------------------------------- PASS assembly
    reg  [NS*L*8-1:0] s_w;
    reg  [NS*L*4-1:0] s_idx;
    reg  [NS*2-1:0]   s_code;
    reg  [NS*4-1:0]   s_r0;
    reg  [NS*3-1:0]   s_dj;
    reg  [NS-1:0]     s_en;
    reg  [NS*5-1:0]   s_kval;
    reg  [TMV*JW-1:0] s_j0;
    reg  [NS*L*8-1:0] n_w;
    reg  [NS*L*4-1:0] n_idx;
    reg  [NS*2-1:0]   n_code;
    reg  [NS*4-1:0]   n_r0;
    reg  [NS*3-1:0]   n_dj;
    reg  [NS-1:0]     n_en;
    reg  [NS*5-1:0]   n_kval;
    reg  [TMV*JW-1:0] n_j0;
    wire [31:0] s0 = {24'd0, op_tdata[58 * 8 +: 8]};
    integer h;
    always @* begin
        n_w = s_w; n_idx = s_idx; n_code = s_code; n_r0 = s_r0; n_dj = s_dj; n_en = s_en;
        n_kval = s_kval; n_j0 = s_j0;
        for (h = 0; h < 2; h = h + 1)
            if (s0 + h < NS) begin
                n_w[(s0 + h) * 128 +: 128]  = op_tdata[h * 208 +: 128];
                n_idx[(s0 + h) * 64 +: 64]  = op_tdata[h * 208 + 128 +: 64];
                n_code[(s0 + h) * 2 +: 2]   = op_tdata[h * 208 + 192 +: 2];
                n_en[s0 + h]                = op_tdata[h * 208 + 194];
                n_dj[(s0 + h) * 3 +: 3]     = op_tdata[h * 208 + 195 +: 3];
                n_r0[(s0 + h) * 4 +: 4]     = op_tdata[h * 208 + 200 +: 4];
                n_kval[(s0 + h) * 5 +: 5]   = {1'b0, op_tdata[h * 208 + 204 +: 4]} + 5'd1;
            end
        if (s0 / MV_TEAM < TMV)
            n_j0[(s0 / MV_TEAM) * JW +: JW] = op_tdata[59 * 8 +: JW];
    end

    wire is_pass    = take && kind == K_PASS;
    wire is_operand = take && kind == K_OPERAND;
    wire issue      = (is_pass && op_tlast) || is_operand;
    wire p_mode     = is_pass & op_tdata[52 * 8];
    wire p_last     = is_operand ? op_tlast : op_tdata[52 * 8 + 1];

    always @(posedge ap_clk) begin
        if (rst || start_pulse || issue) begin          // a pass starts with every slot idle
            s_w <= {NS*L*8{1'b0}}; s_idx <= {NS*L*4{1'b0}}; s_code <= {NS*2{1'b0}};
            s_r0 <= {NS*4{1'b0}}; s_dj <= {NS*3{1'b0}}; s_en <= {NS{1'b0}};
            s_kval <= {NS*5{1'b0}}; s_j0 <= {TMV*JW{1'b0}};
        end else if (is_pass) begin
            s_w <= n_w; s_idx <= n_idx; s_code <= n_code; s_r0 <= n_r0; s_dj <= n_dj;
            s_en <= n_en; s_kval <= n_kval; s_j0 <= n_j0;
        end
    end

    // ---------------------------------------------------------------- the core
    wire               c_valid, c_mode;
    wire [NRES*32-1:0] c_res;
    wire [63:0]        c_macs, c_fixed;
    mpe_core #(.ROWS(ROWS), .COLS(COLS), .L(L), .MV_COLS(MV_COLS), .MV_TEAM(MV_TEAM), .MV_ROWS(MV_ROWS), .KB(KB),
               .OAU_MIN(OAU_MIN), .DSP_PRIM(DSP_PRIM)) core (
        .clk(ap_clk), .rst(rst || start_pulse),
        .ld_en(take && kind == K_ACT), .ld_mv(op_tdata[59 * 8 + 1]), .ld_bank(op_tdata[59 * 8]),
        .ld_row(op_tdata[56 * 8 +: 8]), .ld_j(op_tdata[57 * 8 +: JW]), .ld_data(op_tdata[127:0]),
        .in_valid(issue), .in_mode(p_mode), .in_direct(is_operand), .in_last(p_last),
        .in_bank(op_tdata[52 * 8 + 2]), .in_j(op_tdata[53 * 8 +: JW]), .in_j0(n_j0),
        .in_row(op_tdata[55 * 8 +: 5]), .in_lanes(is_operand ? 9'd2 : op_tdata[56 * 8 +: 9]),
        .in_act_a(op_tdata[24 * 8 +: 128]), .in_act_b(op_tdata[40 * 8 +: 128]),
        .in_w(is_operand ? {{(NS - 1) * 128{1'b0}}, op_tdata[127:0]} : n_w),
        .in_idx(is_operand ? {{(NS - 1) * 64{1'b0}}, op_tdata[128 +: 64]} : n_idx),
        .in_code(is_operand ? {{(NS - 1) * 2{1'b0}}, op_tdata[56 * 8 +: 2]} : n_code),
        .in_r0(is_operand ? {{(NS - 1) * 4{1'b0}}, op_tdata[57 * 8 +: 4]} : n_r0),
        .in_dj(is_operand ? {NS * 3{1'b0}} : n_dj),
        .in_en(is_operand ? {NS{1'b0}} : n_en),
        .in_kval(is_operand ? {NS * 5{1'b0}} : n_kval),
        .out_valid(c_valid), .out_mode(c_mode), .out_res(c_res), .macs(c_macs), .fixed_macs(c_fixed));

    // ---------------------------------------------------------------- result tiles
    // Beats per tile, pushed when a pass with last is issued (tiles leave the core in that order).
    localparam BW = 9;
    reg [BW-1:0]      nbeats_q [0:TB-1];
    reg [TBW-1:0]     nb_wr, nb_rd;
    reg [NRES*32-1:0] tbuf [0:TB-1];
    reg [TBW-1:0]     t_wr, t_rd;
    reg [TBW:0]       t_count;
    reg [BW-1:0]      beat;
    wire [BW-1:0]     tile_beats = is_operand ? 9'd2 : p_mode ? TMV[BW-1:0] : ROWS[BW-1:0];
    wire              res_go = res_tvalid && res_tready;
    wire              tile_out = res_go && res_tlast;
    assign res_tvalid = t_count != 0;
    assign res_tdata  = tbuf[t_rd][beat * 512 +: 512];
    assign res_tlast  = beat == nbeats_q[nb_rd] - 9'd1;
    wire pushing = issue && p_last;

    always @(posedge ap_clk) begin
        if (rst || start_pulse) begin
            nb_wr <= 0; nb_rd <= 0; t_wr <= 0; t_rd <= 0; t_count <= 0; beat <= 0; owed <= 0;
        end else begin
            if (pushing) begin
                nbeats_q[nb_wr] <= tile_beats;
                nb_wr <= nb_wr + 1'b1;
            end
            if (c_valid) begin
                tbuf[t_wr] <= c_res;
                t_wr <= t_wr + 1'b1;
            end
            if (res_go) beat <= res_tlast ? {BW{1'b0}} : beat + 1'b1;
            if (tile_out) begin
                t_rd <= t_rd + 1'b1;
                nb_rd <= nb_rd + 1'b1;
            end
            t_count <= t_count + {{TBW{1'b0}}, c_valid} - {{TBW{1'b0}}, tile_out};
            owed    <= owed + {{TBW{1'b0}}, pushing} - {{TBW{1'b0}}, tile_out};
        end
    end

    // ---------------------------------------------------------------- run control and counters
    reg [63:0] r_insns, r_macs, r_fixed;
    always @(posedge ap_clk) begin
        if (rst) begin
            running <= 1'b0; ending <= 1'b0; done_flag <= 1'b0; proto_err <= 1'b0;
            insns <= 64'd0; ext_macs <= 64'd0; ext_fixed <= 64'd0;
        end else begin
            if (start_pulse) begin
                running <= 1'b1; ending <= 1'b0; proto_err <= 1'b0;
                insns <= 64'd0; ext_macs <= 64'd0; ext_fixed <= 64'd0;
            end else if (take) begin
                if (kind == K_INSN) begin
                    insns <= insns + 64'd1;
                    if (!op_tdata[21 * 8]) begin
                        ext_macs  <= ext_macs + op_tdata[63:0];
                        ext_fixed <= ext_fixed + op_tdata[127:64];
                    end
                end else if (kind == K_END) begin
                    ending <= 1'b1;
                end else if (kind != K_OPERAND && kind != K_ACT && kind != K_PASS) begin
                    ending <= 1'b1;
                    proto_err <= 1'b1;
                end
            end
            // ap_done is cleared by the read that returns it (a done set on that edge wins)
            if (ar_fire && s_axi_control_araddr == REG_CTRL) done_flag <= 1'b0;
            if (running && ending && owed == 0 && !start_pulse) begin
                running <= 1'b0;
                done_flag <= 1'b1;
            end
        end
        r_insns <= insns;
        r_macs  <= ext_macs + c_macs;
        r_fixed <= ext_fixed + c_fixed;
    end

    // ---------------------------------------------------------------- s_axilite
    assign s_axi_control_awready = !aw_ok && !s_axi_control_bvalid;
    assign s_axi_control_wready  = !w_ok && !s_axi_control_bvalid;
    assign s_axi_control_arready = !s_axi_control_rvalid;
    assign s_axi_control_bresp   = 2'b00;
    assign s_axi_control_rresp   = 2'b00;
    always @(posedge ap_clk) begin
        start_pulse <= 1'b0;
        if (rst) begin
            aw_ok <= 1'b0; w_ok <= 1'b0; s_axi_control_bvalid <= 1'b0; s_axi_control_rvalid <= 1'b0;
            awaddr_q <= 12'd0; wdata_q <= 32'd0; s_axi_control_rdata <= 32'd0;
        end else begin
            if (s_axi_control_awvalid && s_axi_control_awready) begin
                aw_ok <= 1'b1;
                awaddr_q <= s_axi_control_awaddr;
            end
            if (s_axi_control_wvalid && s_axi_control_wready) begin
                w_ok <= 1'b1;
                wdata_q <= s_axi_control_wdata;
            end
            if (aw_ok && w_ok) begin
                aw_ok <= 1'b0;
                w_ok <= 1'b0;
                s_axi_control_bvalid <= 1'b1;
                if (awaddr_q == REG_CTRL && wdata_q[0] && !running) start_pulse <= 1'b1;
            end
            if (s_axi_control_bvalid && s_axi_control_bready) s_axi_control_bvalid <= 1'b0;
            if (ar_fire) begin
                s_axi_control_rvalid <= 1'b1;
                case (s_axi_control_araddr)
                    REG_CTRL:       s_axi_control_rdata <= {28'd0, !running, !running, done_flag, running};
                    REG_INSNS:      s_axi_control_rdata <= r_insns[31:0];
                    REG_INSNS + 8:  s_axi_control_rdata <= r_insns[63:32];
                    REG_MACS:       s_axi_control_rdata <= r_macs[31:0];
                    REG_MACS + 8:   s_axi_control_rdata <= r_macs[63:32];
                    REG_FIXED:      s_axi_control_rdata <= r_fixed[31:0];
                    REG_FIXED + 8:  s_axi_control_rdata <= r_fixed[63:32];
                    REG_STATUS:     s_axi_control_rdata <= {31'd0, proto_err};
                    default:        s_axi_control_rdata <= 32'd0;
                endcase
            end
            if (rd_fire) s_axi_control_rvalid <= 1'b0;
        end
    end
    // Inputs with no use here: byte strobes (every register is written whole), the result mode.
    wire unused = &{s_axi_control_wstrb, wdata_q[31:1], c_mode, 1'b0};
endmodule
