// memctrl.h: what the parts of the memctrl kernel (memctrl.cpp, memctrl_move.cpp, mpe_feed.cpp) share: the remote read between cores.
#ifndef FLIGHTLLM_MEMCTRL_H
#define FLIGHTLLM_MEMCTRL_H

#include "flightllm_kernels.h"

// Copy `rows` rows of `row_bytes` (`stride` apart from `addr`) of buffer `buf` of peer `peer`
// into the same place of this core's buffers B; serves the peers' requests while it waits.
void fllm_remote_read(FLLM_PEER_PARAMS, unsigned peer, CoreBuffers& B, unsigned buf, uint64_t src,
                      uint64_t src_stride, uint64_t dst, uint64_t dst_stride, uint64_t rows,
                      uint64_t row_bytes);

// Answer at most one pending request of a peer from this core's buffers; true if there was one.
bool fllm_serve_remote(FLLM_PEER_PARAMS, const CoreBuffers& B);

#endif  // FLIGHTLLM_MEMCTRL_H
