// ap_int.h: syntax-check shim: the open-source ap_int.h in its C-simulation mode, while our kernels are parsed with __SYNTHESIS__ defined.
//
// The open-source AP headers refuse __SYNTHESIS__ ("does not support synthesis").  The check
// (hw/hls_lint.py --compile) puts this folder first on the include path: the vendor header is
// read with __SYNTHESIS__ undefined, and every line of ours after it sees __SYNTHESIS__ again.
// What this proves: the synthesis branches of our sources parse and type-check against the
// C-simulation model of these types; it says nothing of what Vitis HLS accepts beyond that.
#pragma push_macro("__SYNTHESIS__")
#undef __SYNTHESIS__
#include_next <ap_int.h>
#pragma pop_macro("__SYNTHESIS__")
