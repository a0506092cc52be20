// ap_axi_sdata.h: syntax-check shim: the C-simulation stand-in (../csim_shim) read with __SYNTHESIS__ undefined, like the other headers of this folder.
#pragma push_macro("__SYNTHESIS__")
#undef __SYNTHESIS__
#include "../csim_shim/ap_axi_sdata.h"
#pragma pop_macro("__SYNTHESIS__")
