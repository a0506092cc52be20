// ap_axi_sdata.h: C-simulation stand-in for the Vitis HLS header of the same name (hls::axis), with only the members our kernels use.
//
// Vitis HLS ships ap_axi_sdata.h with its own include files; the open-source headers that the
// C simulation builds with (ap_int.h, hls_stream.h) do not have it.  This folder is on the
// include path of the C simulation and of the __SYNTHESIS__ syntax check only, never of v++:
// there the real header defines hls::axis<T, WUser, WId, WDest> with the same data/keep/strb/last
// members (user/id/dest are absent when their widths are 0, as here).
#ifndef FLLM_CSIM_AP_AXI_SDATA_H
#define FLLM_CSIM_AP_AXI_SDATA_H

#include <ap_int.h>

#include <cstddef>

namespace hls {
template <typename T, std::size_t WUser, std::size_t WId, std::size_t WDest>
struct axis {
    static_assert(WUser == 0 && WId == 0 && WDest == 0, "the C-simulation shim models TDATA/TKEEP/TSTRB/TLAST only");
    T data;
    ap_uint<T::width / 8> keep;
    ap_uint<T::width / 8> strb;
    ap_uint<1> last;
};
}  // namespace hls

#endif  // FLLM_CSIM_AP_AXI_SDATA_H
