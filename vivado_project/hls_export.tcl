# hls_export.tcl: vitis_hls pre-synthesis hook (v++ -c --hls.pre_tcl): export each kernel under the VLNV of design.tcl.
#
# pynq binds our drivers by VLNV (flightllm:hls:<kernel>:1.0), and Vitis HLS would otherwise
# export the kernels as xilinx.com:hls:<kernel>:1.0.  The vendor, library and version come from
# design.tcl, generated from flightllm_overlay/hw/design.py.  Never run with Vitis here: the
# FLIGHTLLM_REAL_XCLBIN test in tests/test_vivado_project.py checks the result on a real build.
source [file join [file dirname [file normalize [info script]]] design.tcl]

config_export -vendor $::flightllm::vendor -library $::flightllm::library \
    -version $::flightllm::kernel_version
