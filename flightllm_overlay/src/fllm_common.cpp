// fllm_common.cpp: helpers shared by every FlightLLM kernel (operand region checks, the C-simulation error message and per-core storage).
//
// Each kernel's v++ -c compiles its own source with this one (vivado_project/kernels.mk); no
// kernel source calls into another kernel's source.
#include "flightllm_kernels.h"

#ifndef __SYNTHESIS__
#include <chrono>
#include <thread>
thread_local char fllm_error_message[512];
FllmCsimCore fllm_csim_cores[FLLM_CORES];
thread_local int fllm_csim_core = -1;
bool fllm_csim_serial_cores = true;
bool fllm_csim_fence_each = false;
uint32_t fllm_csim_stall_polls = 200000;
uint64_t fllm_csim_program_words = 0;
thread_local uint64_t fllm_csim_port_bytes[FLLM_CHANNELS_PER_CORE];
thread_local bool fllm_csim_port_bound[FLLM_CHANNELS_PER_CORE];

void fllm_csim_idle() {
    static thread_local unsigned spins = 0;
    if (++spins % 64) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(20));
}
#endif

unsigned fllm_check_region(uint64_t size, uint64_t addr, uint64_t rows, uint64_t row_bytes,
                           uint64_t stride, const char* what) {
    if (rows == 0 || row_bytes == 0) return 0;
    uint64_t end = addr + (rows - 1) * stride + row_bytes;
    if (end > size)
        FLLM_FAIL(FLLM_ERR_ADDRESS, "%s: bytes 0x%llx..0x%llx fall outside the 0x%llx-byte buffer", what,
                  (unsigned long long)addr, (unsigned long long)end, (unsigned long long)size);
    return 0;
}

unsigned fllm_check_array(uint64_t size, uint64_t addr, uint64_t rows, uint64_t cols, unsigned item,
                          uint64_t stride, const char* what) {
    if (addr % item || (rows > 1 && stride % item))
        FLLM_FAIL(FLLM_ERR_PROGRAM, "%s: address 0x%llx / stride %llu not aligned to %u-byte elements",
                  what, (unsigned long long)addr, (unsigned long long)stride, item);
    return fllm_check_region(size, addr, rows, cols * item, stride, what);
}
