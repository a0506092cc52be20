# postlink.tcl: v++ post-system-link hook (Vivado IPI): check the linked block design against design.tcl.
#
# Runs after v++ has put the compute units into the block design and before synthesis, so a
# naming mismatch shows up minutes into the build instead of after hours.  It only warns: the
# cell naming inside the platform's dynamic region has not been seen on a real build yet.
source [file join [file dirname [file normalize [info script]]] design.tcl]

namespace eval ::flightllm {
    variable postlink_warnings 0
    foreach cu [cus] {
        set cells [get_bd_cells -quiet -hierarchical -filter "NAME == $cu"]
        if {[llength $cells] == 0} {
            puts "WARNING: \[flightllm\] no block-design cell named $cu (kernel [cu_kernel $cu])"
            incr postlink_warnings
            continue
        }
        set want [vlnv [cu_kernel $cu]]
        set got [get_property VLNV [lindex $cells 0]]
        if {$got ne $want} {
            puts "WARNING: \[flightllm\] $cu is $got, expected $want: pynq binds drivers by VLNV\
                  (see hls_export.tcl)"
            incr postlink_warnings
        }
    }
    puts "INFO: \[flightllm\] post-link check of [llength [cus]] compute units:\
          $postlink_warnings warning(s)"
}
