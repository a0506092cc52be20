// csim_main.cpp: C-simulation testbench of the FlightLLM HLS kernels: runs a memory image (HBM channels, DDR instruction image, pos/len) and writes HBM and on-chip buffers back out.
//
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
// result.txt: "key value" lines: status, error_code, error_core, error_pc, insns, message, and per
// core "core<c>_insns LD ST MM MV MISC SYS", "core<c>_macs", "core<c>_fixed_macs", "core<c>_misc_elements", and per
// channel "hbm_read<ch>", "hbm_written<ch>".
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
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
    unsigned runs = 1;
    FllmSchedule schedule = FLLM_SCHEDULE_PROGRAM;
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
            if (v == "program") schedule = FLLM_SCHEDULE_PROGRAM;
            else if (v == "decoupled") schedule = FLLM_SCHEDULE_DECOUPLED;
            else {
                std::cerr << "flightllm_csim: unknown schedule " << v << "\n";
                return 2;
            }
        } else if (key == "program") ls >> program_path;
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

    CoreState* cores = new CoreState[FLLM_CORES];
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        for (unsigned b = 0; b < FLLM_NUM_BUFFERS; b++) {
            uint8_t* buf = cores[c].buffer(b);
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

    SchedulerResult r{};
    for (unsigned i = 0; i < runs; i++) {
        r = flightllm_run(program.data(), program.size(), pos, len, hbm, hbm_bytes, cores, schedule);
        if (r.status != FLLM_STATUS_DONE) break;
    }

    for (const Channel& ch : channels)
        write_file(rel(out_dir) + "/hbm" + std::to_string(ch.ch) + ".bin", ch.bytes.data(), ch.bytes.size());
    for (unsigned c = 0; c < FLLM_CORES; c++)
        for (unsigned b = 0; b < FLLM_NUM_BUFFERS; b++)
            write_file(rel(out_dir) + "/core" + std::to_string(c) + "_" + FLLM_BUF_NAMES[b] + ".bin",
                       cores[c].buffer(b), FLLM_BUF_BYTES[b]);
    std::ofstream res(rel(out_dir) + "/result.txt");
    res << "status " << r.status << "\nerror_code " << r.error_code << "\nerror_core " << r.error_core
        << "\nerror_pc " << r.error_pc << "\ninsns " << r.insns << "\n";
    for (unsigned c = 0; c < FLLM_CORES; c++) {
        const CoreCounters& cc = cores[c].count;
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
    res << "message " << (r.status == FLLM_STATUS_DONE ? "" : msg) << "\n";
    res.close();
    delete[] cores;
    return 0;
}
