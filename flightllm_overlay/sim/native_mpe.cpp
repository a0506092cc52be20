// native_mpe.cpp: the MPE's exact INT8 products and FP32 epilogue on the simulated buffers (not yet written; see sim/native.py).
#include <cstdint>

#define API extern "C" __attribute__((visibility("default")))
