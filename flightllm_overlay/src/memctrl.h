// memctrl.h: what the parts of the memctrl kernel (memctrl.cpp, memctrl_move.cpp, mpe_feed.cpp) share: the links to the other cores and the remote read.
#ifndef FLIGHTLLM_MEMCTRL_H
#define FLIGHTLLM_MEMCTRL_H

#include "flightllm_kernels.h"

// The AXI4-Stream links of one core to its two peers: peer p is core (c + 1 + p) % 3.  A request
// goes out on req_out[p]; its bytes come back on data_in[p]; requests of the peers arrive on
// req_in[p] and are answered on data_out[p].
struct RemoteLinks {
    fllm_link_t* req_out0; fllm_link_t* req_in0; fllm_link_t* data_out0; fllm_link_t* data_in0;
    fllm_link_t* req_out1; fllm_link_t* req_in1; fllm_link_t* data_out1; fllm_link_t* data_in1;
    const CoreBuffers* buffers;     // what the peers' requests read
};

// Copy `rows` rows of `row_bytes` (`stride` apart from `addr`) of buffer `buf` of peer `peer`
// into the same place of this core's buffer; serves the peers' requests while it waits.
void fllm_remote_read(RemoteLinks& peers, unsigned peer, CoreBuffers& B, unsigned buf, uint64_t addr,
                      uint64_t rows, uint64_t row_bytes, uint64_t stride);

// Answer at most one pending request of a peer; true if there was one.
bool fllm_serve_remote(RemoteLinks& peers);

#endif  // FLIGHTLLM_MEMCTRL_H
