// mpe_tb.cpp: C-simulation testbench of the mpe kernel alone: feeds it a file of op beats (docs/mpe_stream.md) and writes the result beats and its counter registers.
//
// Usage: flightllm_mpe_tb OP_BEATS RES_BEATS REGS
// A beat file is 65 bytes per beat: the 64 TDATA bytes (byte b = bits 8b+7..8b), then TLAST (0/1).
// REGS gets "insns macs fixed_macs unread": the 64-bit counters and the op beats left unread.  The op file must end with
// an END beat (or a beat of unknown kind): the kernel returns there, and so can this testbench
// run it on one thread.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <vector>

#include "flightllm_kernels.h"

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: flightllm_mpe_tb OP_BEATS RES_BEATS REGS\n";
        return 2;
    }
    std::ifstream in(argv[1], std::ios::binary);
    std::vector<uint8_t> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in && !in.eof()) {
        std::cerr << "flightllm_mpe_tb: cannot read " << argv[1] << "\n";
        return 2;
    }
    if (raw.size() % (FLLM_BEAT_BYTES + 1)) {
        std::cerr << "flightllm_mpe_tb: " << argv[1] << " is not a whole number of 65-byte beats\n";
        return 2;
    }
    fllm_link_t op, res;
    for (size_t i = 0; i < raw.size(); i += FLLM_BEAT_BYTES + 1)
        op.write(fllm_beat_of(&raw[i], raw[i + FLLM_BEAT_BYTES] != 0));
    unsigned r[6];
    mpe(&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], op, res);
    std::ofstream out(argv[2], std::ios::binary);
    while (!res.empty()) {
        fllm_beat_t b = res.read();
        uint8_t by[FLLM_BEAT_BYTES + 1];
        fllm_beat_bytes(b, by);
        by[FLLM_BEAT_BYTES] = (uint8_t)b.last;
        out.write((const char*)by, sizeof(by));
    }
    std::ofstream regs(argv[3]);
    regs << (((uint64_t)r[1] << 32) | r[0]) << " " << (((uint64_t)r[3] << 32) | r[2]) << " "
         << (((uint64_t)r[5] << 32) | r[4]) << " " << op.size() << "\n";
    return 0;
}
