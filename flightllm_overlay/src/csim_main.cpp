// csim_main.cpp: C-simulation testbench of the FlightLLM HLS kernels: runs a memory image (HBM channels, DDR instruction image, pos/len) through every compute unit, each in its own thread, and writes HBM and on-chip buffers back out.
//
// As the host does (overlay/drivers.py), each run starts every core's memctrl, mpe and misc, then
// the scheduler; the units block on their AXI4-Stream links and stop on END.  Streams are the
// thread-safe hls::stream (built with -DHLS_STREAM_THREAD_SAFE).
// Usage: flightllm_csim RUN_FILE
// RUN_FILE is text, one directive per line (paths relative to the file's folder):
//     pos P                      run-time parameter P (default 0)
//     len L                      run-time parameter L (default 0)
//     schedule program|decoupled how the concurrent units are interleaved (default program)
//     program FILE               the DDR instruction image (uint32 little endian, isa.pack_image)
//     channel CH BASE FILE       HBM pseudo-channel CH is bound at device address BASE; FILE holds
//                                its bytes (the bound buffer is that long)
//     buffers_in DIR             optional: initial on-chip buffers DIR/core<c>_<buf>.bin
//     out DIR                    results: DIR/hbm<ch>.bin per bound channel,
//                                DIR/core<c>_<buf>.bin per core and buffer, DIR/result.txt
//     runs N                     optional: run the image N times in a row (default 1)
//     start_late CORE MS         optional: start core CORE's memctrl MS milliseconds after the scheduler
//     never_start CORE           optional: never start core CORE's memctrl: the run stalls; the
//                                testbench reports the STALLED status and exits without joining
//     stall_polls N              optional: the scheduler's watchdog (empty polls before STALLED)
// result.txt: "key value" lines: status, error_code, error_core, error_pc, insns, stalled_seen,
// message; per core "core<c>_insns LD ST MM MV MISC SYS", "core<c>_macs", "core<c>_fixed_macs",
// "core<c>_misc_elements" (memctrl's view), the units' own registers "mpe<c>_insns",
// "mpe<c>_macs", "mpe<c>_fixed_macs", "misc<c>_insns", "misc<c>_elements", "memctrl<c>_bytes_read",
// "memctrl<c>_bytes_written"; per channel "hbm_read<ch>", "hbm_written<ch>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "flightllm_kernels.h"

static std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        std::cerr << "flightllm_csim: cannot read " << path << "\n";
        std::exit(2);
    }
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

static uint8_t* buffer_of(CoreBuffers& B, unsigned i) {
    switch (i) {
        case FLLM_BUF_WBUF: return B.wbuf;
        case FLLM_BUF_ABUF: return B.abuf;
        case FLLM_BUF_GBUF: return B.gbuf;
        case FLLM_BUF_META: return B.meta;
        case FLLM_BUF_FSB: return B.fsb;
        default: return B.bias;
    }
}

static uint64_t reg64(const unsigned r[2]) { return ((uint64_t)r[1] << 32) | r[0]; }

// Every stream of the accelerator (the v++ sc= connections of hw/design.py)
struct Links {
    fllm_link_t cmd[FLLM_CORES], done[FLLM_CORES], mpe_op[FLLM_CORES], mpe_res[FLLM_CORES];
    fllm_link_t misc_op[FLLM_CORES], misc_req[FLLM_CORES];
    fllm_link_t req[FLLM_CORES][FLLM_CORES], data[FLLM_CORES][FLLM_CORES];   // [from][to]
};

struct UnitRegs {            // the units' read-only registers after a run
    unsigned mpe[FLLM_CORES][6], misc[FLLM_CORES][4], memctrl[FLLM_CORES][4];
};

static std::thread start_memctrl(Links& L, UnitRegs& R, unsigned c, uint8_t* const* port,
                                 const uint64_t* bytes, unsigned late_ms) {
    return std::thread([&L, &R, c, port, bytes, late_ms]() {
        if (late_ms) std::this_thread::sleep_for(std::chrono::milliseconds(late_ms));
        fllm_csim_core = (int)c;
        for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) {
            fllm_csim_port_bound[k] = port[k] != nullptr;
            fllm_csim_port_bytes[k] = bytes[k];
        }
        const unsigned p0 = (c + 1) % FLLM_CORES, p1 = (c + 2) % FLLM_CORES;   // peers 0 and 1
        unsigned* r = R.memctrl[c];
        memctrl(port[0], port[1], port[2], port[3], port[4], port[5], port[6], port[7], &r[0], &r[1], &r[2],
                &r[3], L.cmd[c], L.done[c], L.mpe_op[c], L.mpe_res[c], L.misc_op[c], L.misc_req[c],
                L.req[c][p0], L.req[p0][c], L.data[c][p0], L.data[p0][c],
                L.req[c][p1], L.req[p1][c], L.data[c][p1], L.data[p1][c]);
    });
}

static void write_file(const std::string& path, const uint8_t* data, size_t n) {
    std::ofstream f(path, std::ios::binary);
    if (!f || !f.write((const char*)data, (std::streamsize)n)) {
        std::cerr << "flightllm_csim: cannot write " << path << "\n";
        std::exit(2);
    }
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: flightllm_csim RUN_FILE\n";
        return 2;
    }
    std::string run_path = argv[1];
    std::string dir = run_path.find('/') == std::string::npos ? "." : run_path.substr(0, run_path.rfind('/'));
    auto rel = [&](const std::string& p) { return p.size() && p[0] == '/' ? p : dir + "/" + p; };

    uint32_t pos = 0, len = 0;
    unsigned runs = 1, late_ms = 0, stall_polls = 0;
    int late_core = -1, never_start = -1;
    bool fence_each = true;
    std::string program_path, buffers_in, out_dir;
    struct Channel {
        unsigned ch;
        unsigned long long base;
        std::vector<uint8_t> bytes;
    };
    std::vector<Channel> channels;

    std::ifstream rf(run_path);
    if (!rf) {
        std::cerr << "flightllm_csim: cannot read " << run_path << "\n";
        return 2;
    }
    std::string line;
    while (std::getline(rf, line)) {
        std::istringstream ls(line);
        std::string key;
        if (!(ls >> key) || key[0] == '#') continue;
        if (key == "pos") ls >> pos;
        else if (key == "len") ls >> len;
        else if (key == "runs") ls >> runs;
        else if (key == "schedule") {
            std::string v;
            ls >> v;
            if (v == "program") fence_each = true;           // one instruction at a time
            else if (v == "decoupled") fence_each = false;   // a whole phase, then the tokens decide
            else {
                std::cerr << "flightllm_csim: unknown schedule " << v << "\n";
                return 2;
            }
        } else if (key == "start_late") ls >> late_core >> late_ms;
        else if (key == "never_start") ls >> never_start;
        else if (key == "stall_polls") ls >> stall_polls;
        else if (key == "program") ls >> program_path;
        else if (key == "buffers_in") ls >> buffers_in;
        else if (key == "out") ls >> out_dir;
        else if (key == "channel") {
            Channel c;
            std::string file;
            ls >> c.ch >> c.base >> file;
            if (c.ch >= FLLM_HBM_CHANNELS) {
                std::cerr << "flightllm_csim: no HBM pseudo-channel " << c.ch << "\n";
                return 2;
            }
            c.bytes = read_file(rel(file));
            channels.push_back(std::move(c));
        } else {
            std::cerr << "flightllm_csim: unknown directive " << key << "\n";
            return 2;
        }
    }
    if (program_path.empty() || out_dir.empty()) {
        std::cerr << "flightllm_csim: the run file needs `program` and `out`\n";
        return 2;
    }
    std::vector<uint8_t> image = read_file(rel(program_path));
    std::vector<word_t> program(image.size() / 4);
    for (size_t i = 0; i < program.size(); i++) program[i] = fllm_ld_u32(image.data(), 4 * i);

    // each core's ports: port k of core c is pseudo-channel FLLM_CORE_CHANNELS[c][k]
    static uint8_t* hbm[FLLM_CORES][FLLM_CHANNELS_PER_CORE];
    static uint64_t hbm_bytes[FLLM_CORES][FLLM_CHANNELS_PER_CORE];
    for (Channel& ch : channels)
        for (unsigned c = 0; c < FLLM_CORES; c++)
            for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++)
                if (FLLM_CORE_CHANNELS[c][k] == ch.ch) {
                    // a bound buffer of 0 bytes is still bound: give it a valid pointer
                    if (ch.bytes.empty()) ch.bytes.reserve(1);
                    hbm[c][k] = ch.bytes.data() ? ch.bytes.data() : (uint8_t*)&ch;
                    hbm_bytes[c][k] = ch.bytes.size();
                }

    CoreBuffers* cores = new CoreBuffers[FLLM_CORES];
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        fllm_csim_cores[c].buffers = &cores[c];
        for (unsigned b = 0; b < FLLM_NUM_BUFFERS; b++) {
            uint8_t* buf = buffer_of(cores[c], b);
            std::memset(buf, 0, FLLM_BUF_BYTES[b]);
            if (!buffers_in.empty()) {
                std::vector<uint8_t> init =
                    read_file(rel(buffers_in) + "/core" + std::to_string(c) + "_" + FLLM_BUF_NAMES[b] + ".bin");
                if (init.size() != FLLM_BUF_BYTES[b]) {
                    std::cerr << "flightllm_csim: initial " << FLLM_BUF_NAMES[b] << " of core " << c << " has "
                              << init.size() << " bytes, not " << FLLM_BUF_BYTES[b] << "\n";
                    return 2;
                }
                std::memcpy(buf, init.data(), init.size());
            }
        }
    }

    fllm_csim_serial_cores = true;
    fllm_csim_fence_each = fence_each;
    fllm_csim_program_words = program.size();
    if (stall_polls) fllm_csim_stall_polls = stall_polls;
    unsigned status = FLLM_STATUS_IDLE, error_code = 0, error_core = 0, error_pc = 0, regs[4];
    bool stalled_seen = false;
    static UnitRegs R;
    for (unsigned run = 0; run < runs; run++) {
        static Links L;
        std::vector<std::thread> units;
        for (unsigned c = 0; c < FLLM_CORES; c++) {
            units.emplace_back([&, c]() { fllm_csim_core = (int)c; unsigned* m = R.mpe[c];
                                          mpe(&m[0], &m[1], &m[2], &m[3], &m[4], &m[5], L.mpe_op[c], L.mpe_res[c]); });
            units.emplace_back([&, c]() { fllm_csim_core = (int)c; unsigned* m = R.misc[c];
                                          misc(&m[0], &m[1], &m[2], &m[3], L.misc_op[c], L.misc_req[c]); });
            if ((int)c != never_start)
                units.push_back(start_memctrl(L, R, c, hbm[c], hbm_bytes[c], (int)c == late_core ? late_ms : 0));
        }
        status = FLLM_STATUS_RUNNING;
        std::thread sched([&]() {
            scheduler(program.data(), pos, len, &status, &error_code, &error_core, &error_pc, &regs[0], &regs[1],
                      &regs[2], &regs[3], 0, L.cmd[0], L.cmd[1], L.cmd[2], L.done[0], L.done[1], L.done[2]);
        });
        while (true) {                      // the host's view: poll the status register
            unsigned st = __atomic_load_n(&status, __ATOMIC_ACQUIRE);
            if (st == FLLM_STATUS_STALLED) {
                stalled_seen = true;
                if (never_start >= 0) {     // it never finishes: report what the host would see
                    std::ofstream res(rel(out_dir) + "/result.txt");
                    res << "status " << st << "\nerror_code " << __atomic_load_n(&error_code, __ATOMIC_ACQUIRE)
                        << "\nerror_core " << __atomic_load_n(&error_core, __ATOMIC_ACQUIRE) << "\n";
                    res.close();
                    std::fflush(nullptr);
                    std::_Exit(0);
                }
            }
            if (st == FLLM_STATUS_DONE || st == FLLM_STATUS_ERROR) break;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        sched.join();
        for (std::thread& u : units) u.join();
        if (status != FLLM_STATUS_DONE) break;
    }
    const uint64_t insns = ((uint64_t)regs[3] << 32) | regs[2];

    for (const Channel& ch : channels)
        write_file(rel(out_dir) + "/hbm" + std::to_string(ch.ch) + ".bin", ch.bytes.data(), ch.bytes.size());
    for (unsigned c = 0; c < FLLM_CORES; c++)
        for (unsigned b = 0; b < FLLM_NUM_BUFFERS; b++)
            write_file(rel(out_dir) + "/core" + std::to_string(c) + "_" + FLLM_BUF_NAMES[b] + ".bin",
                       buffer_of(cores[c], b), FLLM_BUF_BYTES[b]);
    std::ofstream res(rel(out_dir) + "/result.txt");
    res << "status " << status << "\nerror_code " << error_code << "\nerror_core " << error_core
        << "\nerror_pc " << error_pc << "\ninsns " << insns << "\nstalled_seen " << stalled_seen << "\n";
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        const CoreCounters& cc = fllm_csim_cores[c].count;
        res << "mpe" << c << "_insns " << reg64(&R.mpe[c][0]) << "\nmpe" << c << "_macs " << reg64(&R.mpe[c][2])
            << "\nmpe" << c << "_fixed_macs " << reg64(&R.mpe[c][4]) << "\nmisc" << c << "_insns "
            << reg64(&R.misc[c][0]) << "\nmisc" << c << "_elements " << reg64(&R.misc[c][2]) << "\nmemctrl" << c
            << "_bytes_read " << reg64(&R.memctrl[c][0]) << "\nmemctrl" << c << "_bytes_written "
            << reg64(&R.memctrl[c][2]) << "\n";
        res << "core" << c << "_insns";
        for (unsigned u = 0; u < FLLM_NUM_UNITS; u++) res << " " << cc.insns[u];
        res << "\ncore" << c << "_macs " << cc.macs << "\ncore" << c << "_fixed_macs " << cc.fixed_macs
            << "\ncore" << c << "_misc_elements " << cc.misc_elements << "\n";
        for (unsigned k = 0; k < FLLM_CHANNELS_PER_CORE; k++) {
            unsigned ch = FLLM_CORE_CHANNELS[c][k];
            if (cc.hbm_read[k]) res << "hbm_read" << ch << " " << cc.hbm_read[k] << "\n";
            if (cc.hbm_written[k]) res << "hbm_written" << ch << " " << cc.hbm_written[k] << "\n";
        }
    }
    std::string msg = fllm_error_message;
    for (char& ch : msg)
        if (ch == '\n') ch = ' ';
    res << "message " << (status == FLLM_STATUS_DONE ? "" : msg) << "\n";
    res.close();
    delete[] cores;
    return 0;
}
