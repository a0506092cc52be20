# design.tcl: the FlightLLM block design as Tcl data and procs (GENERATED from flightllm_overlay/hw/design.py, target u280; do not edit)
# Regenerate: python -m flightllm_overlay.hw.vitis --write   (or: make -C vivado_project regen)
# Pure Tcl 8.5+ (no Vivado commands).  Sourced by hls_export.tcl (v++ -c),
# postlink.tcl (v++ -l) and the tests (tclsh).

namespace eval ::flightllm {
    variable target u280
    variable platform xilinx_u280_gen3x16_xdma_1_202211_1
    variable vendor flightllm
    variable library hls
    variable kernel_version 1.0
    variable control_port s_axi_control
    variable axi_data_width 512
    variable cores 3
    variable instruction_memory {DDR[0]}
    variable kernels {scheduler mpe misc memctrl}

    # clocks: name -> {mhz <MHz> kind <DATA|KERNEL|SYSTEM>}
    variable clocks [dict create]
    dict set clocks DATA_CLK {mhz 225 kind DATA}

    # kernel registers, in argument order: name -> {offset bits access arg port}
    # (offsets from the CU base; port is the m_axi port of a pointer argument, or
    # the control port)
    variable registers [dict create]
    dict set registers scheduler {
        program {offset 0x10 bits 64 access rw arg 0 port m_axi_instr}
        pos {offset 0x1C bits 32 access rw arg 1 port s_axi_control}
        len {offset 0x24 bits 32 access rw arg 2 port s_axi_control}
        status {offset 0x2C bits 32 access ro arg 3 port s_axi_control}
        error_code {offset 0x34 bits 32 access ro arg 4 port s_axi_control}
        error_core {offset 0x3C bits 32 access ro arg 5 port s_axi_control}
        error_pc {offset 0x44 bits 32 access ro arg 6 port s_axi_control}
        cycles_lo {offset 0x4C bits 32 access ro arg 7 port s_axi_control}
        cycles_hi {offset 0x54 bits 32 access ro arg 8 port s_axi_control}
        insns_lo {offset 0x5C bits 32 access ro arg 9 port s_axi_control}
        insns_hi {offset 0x64 bits 32 access ro arg 10 port s_axi_control}
        soft_reset {offset 0x6C bits 32 access rw arg 11 port s_axi_control}
    }
    dict set registers mpe {
        insns_lo {offset 0x10 bits 32 access ro arg 0 port s_axi_control}
        insns_hi {offset 0x18 bits 32 access ro arg 1 port s_axi_control}
        macs_lo {offset 0x20 bits 32 access ro arg 2 port s_axi_control}
        macs_hi {offset 0x28 bits 32 access ro arg 3 port s_axi_control}
        fixed_macs_lo {offset 0x30 bits 32 access ro arg 4 port s_axi_control}
        fixed_macs_hi {offset 0x38 bits 32 access ro arg 5 port s_axi_control}
    }
    dict set registers misc {
        insns_lo {offset 0x10 bits 32 access ro arg 0 port s_axi_control}
        insns_hi {offset 0x18 bits 32 access ro arg 1 port s_axi_control}
        elements_lo {offset 0x20 bits 32 access ro arg 2 port s_axi_control}
        elements_hi {offset 0x28 bits 32 access ro arg 3 port s_axi_control}
    }
    dict set registers memctrl {
        hbm0 {offset 0x10 bits 64 access rw arg 0 port m_axi_hbm0}
        hbm1 {offset 0x1C bits 64 access rw arg 1 port m_axi_hbm1}
        hbm2 {offset 0x28 bits 64 access rw arg 2 port m_axi_hbm2}
        hbm3 {offset 0x34 bits 64 access rw arg 3 port m_axi_hbm3}
        hbm4 {offset 0x40 bits 64 access rw arg 4 port m_axi_hbm4}
        hbm5 {offset 0x4C bits 64 access rw arg 5 port m_axi_hbm5}
        hbm6 {offset 0x58 bits 64 access rw arg 6 port m_axi_hbm6}
        hbm7 {offset 0x64 bits 64 access rw arg 7 port m_axi_hbm7}
        bytes_read_lo {offset 0x70 bits 32 access ro arg 8 port s_axi_control}
        bytes_read_hi {offset 0x78 bits 32 access ro arg 9 port s_axi_control}
        bytes_written_lo {offset 0x80 bits 32 access ro arg 10 port s_axi_control}
        bytes_written_hi {offset 0x88 bits 32 access ro arg 11 port s_axi_control}
    }

    # compute units, in address order: instance -> {kernel core slr base range
    # control ports {<m_axi port> <bank> ...}}; core -1 is the scheduler (no core)
    variable cus [dict create]
    dict set cus scheduler {kernel scheduler core -1 slr 0 base 0x01800000 range 0x10000 control ap_ctrl_hs ports {m_axi_instr {DDR[0]}} axis {cmd0 out cmd1 out cmd2 out done0 in done1 in done2 in}}
    dict set cus mpe_0 {kernel mpe core 0 slr 0 base 0x01810000 range 0x10000 control ap_ctrl_hs ports {} axis {op in res out}}
    dict set cus misc_0 {kernel misc core 0 slr 0 base 0x01820000 range 0x10000 control ap_ctrl_hs ports {} axis {op in req out}}
    dict set cus memctrl_0 {kernel memctrl core 0 slr 0 base 0x01830000 range 0x10000 control ap_ctrl_hs ports {m_axi_hbm0 {HBM[0]} m_axi_hbm1 {HBM[4]} m_axi_hbm2 {HBM[8]} m_axi_hbm3 {HBM[12]} m_axi_hbm4 {HBM[16]} m_axi_hbm5 {HBM[20]} m_axi_hbm6 {HBM[24]} m_axi_hbm7 {HBM[28]}} axis {cmd in done out mpe_op out mpe_res in misc_op out misc_req in peer0_req_out out peer0_req_in in peer0_data_out out peer0_data_in in peer1_req_out out peer1_req_in in peer1_data_out out peer1_data_in in}}
    dict set cus mpe_1 {kernel mpe core 1 slr 1 base 0x01840000 range 0x10000 control ap_ctrl_hs ports {} axis {op in res out}}
    dict set cus misc_1 {kernel misc core 1 slr 1 base 0x01850000 range 0x10000 control ap_ctrl_hs ports {} axis {op in req out}}
    dict set cus memctrl_1 {kernel memctrl core 1 slr 1 base 0x01860000 range 0x10000 control ap_ctrl_hs ports {m_axi_hbm0 {HBM[1]} m_axi_hbm1 {HBM[5]} m_axi_hbm2 {HBM[9]} m_axi_hbm3 {HBM[13]} m_axi_hbm4 {HBM[17]} m_axi_hbm5 {HBM[21]} m_axi_hbm6 {HBM[25]} m_axi_hbm7 {HBM[29]}} axis {cmd in done out mpe_op out mpe_res in misc_op out misc_req in peer0_req_out out peer0_req_in in peer0_data_out out peer0_data_in in peer1_req_out out peer1_req_in in peer1_data_out out peer1_data_in in}}
    dict set cus mpe_2 {kernel mpe core 2 slr 2 base 0x01870000 range 0x10000 control ap_ctrl_hs ports {} axis {op in res out}}
    dict set cus misc_2 {kernel misc core 2 slr 2 base 0x01880000 range 0x10000 control ap_ctrl_hs ports {} axis {op in req out}}
    dict set cus memctrl_2 {kernel memctrl core 2 slr 2 base 0x01890000 range 0x10000 control ap_ctrl_hs ports {m_axi_hbm0 {HBM[2]} m_axi_hbm1 {HBM[6]} m_axi_hbm2 {HBM[10]} m_axi_hbm3 {HBM[14]} m_axi_hbm4 {HBM[18]} m_axi_hbm5 {HBM[22]} m_axi_hbm6 {HBM[26]} m_axi_hbm7 {HBM[30]}} axis {cmd in done out mpe_op out mpe_res in misc_op out misc_req in peer0_req_out out peer0_req_in in peer0_data_out out peer0_data_in in peer1_req_out out peer1_req_in in peer1_data_out out peer1_data_in in}}

    # AXI4-Stream connections: {<producer> <port> <consumer> <port>} ...
    variable streams {
        {scheduler cmd0 memctrl_0 cmd}
        {memctrl_0 done scheduler done0}
        {memctrl_0 mpe_op mpe_0 op}
        {mpe_0 res memctrl_0 mpe_res}
        {memctrl_0 misc_op misc_0 op}
        {misc_0 req memctrl_0 misc_req}
        {scheduler cmd1 memctrl_1 cmd}
        {memctrl_1 done scheduler done1}
        {memctrl_1 mpe_op mpe_1 op}
        {mpe_1 res memctrl_1 mpe_res}
        {memctrl_1 misc_op misc_1 op}
        {misc_1 req memctrl_1 misc_req}
        {scheduler cmd2 memctrl_2 cmd}
        {memctrl_2 done scheduler done2}
        {memctrl_2 mpe_op mpe_2 op}
        {mpe_2 res memctrl_2 mpe_res}
        {memctrl_2 misc_op misc_2 op}
        {misc_2 req memctrl_2 misc_req}
        {memctrl_0 peer0_req_out memctrl_1 peer1_req_in}
        {memctrl_0 peer0_data_out memctrl_1 peer1_data_in}
        {memctrl_0 peer1_req_out memctrl_2 peer0_req_in}
        {memctrl_0 peer1_data_out memctrl_2 peer0_data_in}
        {memctrl_1 peer0_req_out memctrl_2 peer1_req_in}
        {memctrl_1 peer0_data_out memctrl_2 peer1_data_in}
        {memctrl_1 peer1_req_out memctrl_0 peer0_req_in}
        {memctrl_1 peer1_data_out memctrl_0 peer0_data_in}
        {memctrl_2 peer0_req_out memctrl_0 peer1_req_in}
        {memctrl_2 peer0_data_out memctrl_0 peer1_data_in}
        {memctrl_2 peer1_req_out memctrl_1 peer0_req_in}
        {memctrl_2 peer1_data_out memctrl_1 peer0_data_in}
    }
}

# --- procs: read the data above ---------------------------------------------------------------
proc ::flightllm::kernels {} { variable kernels; return $kernels }

proc ::flightllm::vlnv {kernel} {
    variable vendor; variable library; variable kernel_version
    ::flightllm::_known_kernel $kernel
    return "$vendor:$library:$kernel:$kernel_version"
}

# Compute units (instances) in address order; only those of `kernel` when given.
proc ::flightllm::cus {{kernel ""}} {
    variable cus
    if {$kernel eq ""} { return [dict keys $cus] }
    ::flightllm::_known_kernel $kernel
    set out {}
    dict for {name cu} $cus { if {[dict get $cu kernel] eq $kernel} { lappend out $name } }
    return $out
}

proc ::flightllm::cu {inst} {
    variable cus
    if {![dict exists $cus $inst]} {
        error "flightllm: no compute unit '$inst'; compute units are [dict keys $cus]"
    }
    return [dict get $cus $inst]
}

proc ::flightllm::cu_kernel {inst} { return [dict get [::flightllm::cu $inst] kernel] }
proc ::flightllm::core {inst} { return [dict get [::flightllm::cu $inst] core] }
proc ::flightllm::slr {inst} { return [dict get [::flightllm::cu $inst] slr] }
proc ::flightllm::base_address {inst} { return [dict get [::flightllm::cu $inst] base] }

# Argument registers of a compute unit (or a kernel), in argument order.
proc ::flightllm::registers {inst_or_kernel} {
    return [dict keys [::flightllm::_regs $inst_or_kernel]]
}

proc ::flightllm::reg_offset {inst_or_kernel reg} {
    return [expr {[dict get [::flightllm::_reg $inst_or_kernel $reg] offset]}]
}

proc ::flightllm::reg_field {inst_or_kernel reg field} {
    return [dict get [::flightllm::_reg $inst_or_kernel $reg] $field]
}

# m_axi ports of a compute unit, and the memory bank each one is wired to (e.g. HBM[4]).
proc ::flightllm::ports {inst} { return [dict keys [dict get [::flightllm::cu $inst] ports]] }

proc ::flightllm::port_bank {inst port} {
    set ports [dict get [::flightllm::cu $inst] ports]
    if {![dict exists $ports $port]} {
        error "flightllm: $inst has no m_axi port '$port'; it has [dict keys $ports]"
    }
    return [dict get $ports $port]
}

# AXI4-Stream ports of a compute unit: {<name> <in|out> ...}
proc ::flightllm::axis {inst} { return [dict get [::flightllm::cu $inst] axis] }

# Stream connections, as v++ writes them: <producer>.<port>:<consumer>.<port>
proc ::flightllm::stream_connects {} {
    variable streams
    set out {}
    foreach s $streams {
        lassign $s src sport dst dport
        lappend out "$src.$sport:$dst.$dport"
    }
    return $out
}

proc ::flightllm::clock_mhz {{name DATA_CLK}} {
    variable clocks
    return [dict get $clocks $name mhz]
}

proc ::flightllm::_known_kernel {kernel} {
    variable kernels
    if {$kernel ni $kernels} { error "flightllm: no kernel '$kernel'; kernels are $kernels" }
}

proc ::flightllm::_regs {inst_or_kernel} {
    variable registers; variable cus
    set kernel $inst_or_kernel
    if {[dict exists $cus $inst_or_kernel]} { set kernel [::flightllm::cu_kernel $inst_or_kernel] }
    ::flightllm::_known_kernel $kernel
    return [dict get $registers $kernel]
}

proc ::flightllm::_reg {inst_or_kernel reg} {
    set regs [::flightllm::_regs $inst_or_kernel]
    if {![dict exists $regs $reg]} {
        error "flightllm: $inst_or_kernel has no register '$reg'; it has [dict keys $regs]"
    }
    return [dict get $regs $reg]
}
