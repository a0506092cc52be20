"""Shared harness of the HLS C-simulation tests: builds the kernels with g++, runs the same images
through the C++ build and the Python FunctionalSimulator, and compares every byte."""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.compiler.buckets import BucketTable
from flightllm_overlay.config import load_target
from flightllm_overlay.errors import AddressError, IllegalInstructionError, ProgramError
from flightllm_overlay.hw.control import UNKNOWN, ErrorCode, SchedulerStatus
from flightllm_overlay.spec.isa import Instruction
from flightllm_overlay.sim.functional import FunctionalSimulator

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "flightllm_overlay" / "src"
SOURCES = ["csim_main.cpp", "fllm_common.cpp", "scheduler.cpp", "memctrl.cpp", "memctrl_move.cpp",
           "mpe_feed.cpp", "mpe.cpp", "misc.cpp"]
HEADERS = ["flightllm_hw.h", "flightllm_kernels.h", "flightllm_decode.h", "flightllm_fp.h", "memctrl.h"]
SHIM = SRC / "csim_shim"          # hls::axis (ap_axi_sdata.h), which the open-source headers lack
HINT = ("run `bash .ci/install-hls` (downloads the hls4ml==1.3.0 wheel with pip and unpacks its "
        "ap_int.h/ap_fixed.h/hls_stream.h into .venv/hls_include; installs g++ if missing)")
# -ffp-contract=off: one rounding per FP operation, as numpy.  The ap_private headers trip g++'s
# (maybe-)uninitialized analysis on default-constructed values: those warnings are theirs.
# -DHLS_STREAM_THREAD_SAFE -pthread: every compute unit runs in its own thread and a stream read
# blocks until data comes (the free-running kernels of the hardware).
CXXFLAGS = ["-O2", "-std=c++17", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas",
            "-Wno-unused-label", "-Wno-uninitialized", "-Wno-maybe-uninitialized",
            "-DHLS_STREAM_THREAD_SAFE", "-pthread"]

TARGET = load_target("u280")
CORES = TARGET.cores
F16, F32, I8 = np.float16, np.float32, np.int8
END, BARRIER = Instruction("SYS", op="end"), Instruction("SYS", op="barrier")
UNIT_NAMES = ("LD", "ST", "MM", "MV", "MISC", "SYS")


def hls_include() -> Path:
    return Path(os.environ.get("FLIGHTLLM_HLS_INCLUDE", ROOT / ".venv" / "hls_include"))


def build_command(out: Path) -> list:
    """The g++ command line that builds the C simulation (see also the module docstring)."""
    return (["g++"] + CXXFLAGS + [f"-I{SRC}", "-isystem", str(hls_include()), "-isystem", str(SHIM),
                                  "-o", str(out)]
            + [str(SRC / s) for s in SOURCES])


@pytest.fixture(scope="session")
def csim(tmp_path_factory) -> Path:
    if shutil.which("g++") is None:
        pytest.fail(f"g++ not found on PATH: {HINT}", pytrace=False)
    for h in ("ap_int.h", "ap_fixed.h", "hls_stream.h"):
        if not (hls_include() / h).is_file():
            pytest.fail(f"HLS header {h} not found in {hls_include()}: {HINT}", pytrace=False)
    exe = tmp_path_factory.mktemp("csim") / "flightllm_csim"
    proc = subprocess.run(build_command(exe), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-5000:]
    own = [ln for ln in proc.stderr.splitlines() if "warning" in ln and str(SRC) in ln]
    assert not own, "\n".join(own)
    return exe


# ---------------------------------------------------------------------------------------------
# Running one image through both executors
# ---------------------------------------------------------------------------------------------
class FlatMemory:
    """Device memory for the Python simulator: the image at 0, then each bound channel's bytes.

    Versions come from one counter shared by every FlatMemory: a simulator reused across runs
    caches decoded images by (address, size, version), so two different images of the same size
    at address 0 must never show the same version."""

    _versions = itertools.count(1)

    def __init__(self, image: np.ndarray, channels: dict):
        raw = np.ascontiguousarray(image, np.uint32).view(np.uint8)
        off = -(-max(raw.size, 1) // 4096) * 4096
        self.bases, self.sizes = {}, {}
        for ch, arr in sorted(channels.items()):
            self.bases[ch], self.sizes[ch] = off, arr.size
            off += -(-max(arr.size, 1) // 4096) * 4096
        self.data = np.zeros(off, np.uint8)
        self.data[:raw.size] = raw
        for ch, arr in channels.items():
            self.data[self.bases[ch]:self.bases[ch] + arr.size] = arr
        self.ver = next(FlatMemory._versions)

    def view(self, addr, nbytes):
        assert 0 <= addr and addr + nbytes <= self.data.size
        return self.data[addr:addr + nbytes]

    def version(self, addr, nbytes=None):
        return self.ver

    def touch(self, addr, nbytes=None):
        self.ver = next(FlatMemory._versions)

    def channel(self, ch) -> np.ndarray:
        return self.data[self.bases[ch]:self.bases[ch] + self.sizes[ch]].copy()


def sim_buffers(sim: FunctionalSimulator) -> list:
    """Every core's on-chip buffers as bytes (lazily loaded weights materialised first)."""
    out = []
    for core in sim.cores:
        core.materialize(0, core.bufs["wbuf"].size)
        out.append({name: core.bufs[name].copy() for name in isa.BUFFERS})
    return out


def error_triple(exc) -> tuple:
    code = (ErrorCode.ILLEGAL_INSTRUCTION if isinstance(exc, IllegalInstructionError) else
            ErrorCode.ADDRESS if isinstance(exc, AddressError) else
            ErrorCode.PROGRAM if isinstance(exc, ProgramError) else ErrorCode.INTERNAL)
    core, pc = getattr(exc, "core", None), getattr(exc, "pc", None)
    return int(code), UNKNOWN if core is None else int(core), UNKNOWN if pc is None else int(pc)


class Outcome:
    """What one executor left behind: error (code, core, pc) or None, HBM channels, buffers, counters."""

    def __init__(self, error, channels, buffers, counters, message=""):
        self.error, self.channels, self.buffers, self.counters = error, channels, buffers, counters
        self.message = message


def py_counters(c) -> dict:
    out = {}
    for i, pc in enumerate(c.per_core):
        out[f"core{i}_insns"] = tuple(pc.instructions[u] for u in UNIT_NAMES)
        out[f"core{i}_macs"], out[f"core{i}_misc_elements"] = pc.macs, pc.misc_elements
        out[f"core{i}_fixed_macs"] = pc.fixed_chain_macs
    out.update({f"hbm_read{ch}": n for ch, n in c.hbm_read.items() if n})
    out.update({f"hbm_written{ch}": n for ch, n in c.hbm_written.items() if n})
    return out


def run_python(sim, image, channels, pos, length) -> Outcome:
    mem = FlatMemory(image, channels)
    try:
        counters = sim.run(mem, 0, {"pos": pos, "len": length}, channel_base=mem.bases)
        error, message = None, ""
    except (IllegalInstructionError, ProgramError) as exc:
        counters, error, message = None, error_triple(exc), str(exc)
    return Outcome(error, {ch: mem.channel(ch) for ch in channels}, sim_buffers(sim),
                   py_counters(counters) if counters else None, message)


def run_csim(exe, work: Path, image, channels, pos, length, buffers_in, schedule="program",
             bases=None, extra=()) -> Outcome:
    """Run the C simulation on one image; `extra`: more run-file lines (start_late, never_start,
    stall_polls).  Outcome.result holds result.txt's raw keys."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    out.mkdir(exist_ok=True)
    (work / "program.bin").write_bytes(np.ascontiguousarray(image, np.uint32).tobytes())
    bases = bases or FlatMemory(image, channels).bases
    lines = [f"pos {pos}", f"len {length}", f"schedule {schedule}", "program program.bin",
             "out out", *extra]
    for ch, arr in sorted(channels.items()):
        (work / f"hbm{ch}.in.bin").write_bytes(np.ascontiguousarray(arr, np.uint8).tobytes())
        lines.append(f"channel {ch} {bases[ch]} hbm{ch}.in.bin")
    if buffers_in is not None:
        (work / "buf_in").mkdir(exist_ok=True)
        for c, bufs in enumerate(buffers_in):
            for name, arr in bufs.items():
                (work / "buf_in" / f"core{c}_{name}.bin").write_bytes(arr.tobytes())
        lines.append("buffers_in buf_in")
    (work / "run.txt").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([str(exe), str(work / "run.txt")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = {}
    for line in (out / "result.txt").read_text().splitlines():
        key, _, value = line.partition(" ")
        res[key] = value
    status = int(res["status"])
    if status == SchedulerStatus.STALLED:
        outcome = Outcome(("STALLED", int(res["error_code"]), int(res["error_core"])), {}, [], None)
        outcome.result = res
        return outcome
    chans = {ch: np.fromfile(out / f"hbm{ch}.bin", np.uint8) for ch in channels}
    bufs = [{name: np.fromfile(out / f"core{c}_{name}.bin", np.uint8) for name in isa.BUFFERS}
            for c in range(CORES)]
    if status == SchedulerStatus.DONE:
        counters = {k: (tuple(int(x) for x in v.split()) if k.endswith("_insns") else int(v))
                    for k, v in res.items() if k.startswith(("core", "hbm_"))}
        check_unit_registers(res, counters)
        outcome = Outcome(None, chans, bufs, counters)
    else:
        assert status == SchedulerStatus.ERROR, res
        outcome = Outcome((int(res["error_code"]), int(res["error_core"]), int(res["error_pc"])), chans,
                          bufs, None, res.get("message", ""))
    outcome.result = res
    return outcome


def check_unit_registers(res: dict, counters: dict):
    """The counter registers each kernel reports itself (mpe from its INSN beats, misc from its
    jobs, memctrl's byte counts) agree with memctrl's per-unit view of the same run."""
    for c in range(CORES):
        ld, st, mm, mv, misc, _ = counters[f"core{c}_insns"]
        assert int(res[f"mpe{c}_insns"]) == mm + mv, (c, res)
        assert int(res[f"mpe{c}_macs"]) == counters[f"core{c}_macs"], (c, res)
        assert int(res[f"mpe{c}_fixed_macs"]) == counters[f"core{c}_fixed_macs"], (c, res)
        assert int(res[f"misc{c}_insns"]) == misc, (c, res)
        assert int(res[f"misc{c}_elements"]) == counters[f"core{c}_misc_elements"], (c, res)
        channels = TARGET.channels_of(c)
        assert int(res[f"memctrl{c}_bytes_read"]) == sum(counters.get(f"hbm_read{ch}", 0) for ch in channels)
        assert int(res[f"memctrl{c}_bytes_written"]) == sum(counters.get(f"hbm_written{ch}", 0)
                                                           for ch in channels)


def assert_same(py: Outcome, cc: Outcome, what=""):
    assert py.error == cc.error, (f"{what}: Python {py.error} ({py.message}) vs C++ {cc.error} "
                                  f"({cc.message})")
    if py.error is not None:
        return
    for ch in py.channels:
        a, b = py.channels[ch], cc.channels[ch]
        if not np.array_equal(a, b):
            bad = np.flatnonzero(a != b)
            pytest.fail(f"{what}: HBM channel {ch} differs at {bad.size} bytes, first at "
                        f"0x{bad[0]:x} (Python {a[bad[0]]:#x}, C++ {b[bad[0]]:#x})")
    for c in range(CORES):
        for name in isa.BUFFERS:
            a, b = py.buffers[c][name], cc.buffers[c][name]
            if not np.array_equal(a, b):
                bad = np.flatnonzero(a != b)
                pytest.fail(f"{what}: core {c} {name} differs at {bad.size} bytes, first at "
                            f"0x{bad[0]:x} (Python {a[bad[0]]:#x}, C++ {b[bad[0]]:#x})")
    assert py.counters == cc.counters, what


def check(csim, tmp_path, streams, channels=None, pos=0, length=0, sim=None, buffers=None,
          schedule="program", what="") -> tuple:
    """Run an image (streams, one per core; missing cores get just SYS end) both ways; assert
    they agree; returns (python outcome, C++ outcome)."""
    streams = list(streams) + [[]] * (CORES - len(streams))
    image = isa.pack_image([isa.encode_stream(list(s) + [END]) for s in streams])
    return check_image(csim, tmp_path, image, channels, pos, length, sim, buffers, schedule, what)


def check_image(csim, tmp_path, image, channels=None, pos=0, length=0, sim=None, buffers=None,
                schedule="program", what=""):
    channels = {ch: np.asarray(a, np.uint8).copy() for ch, a in (channels or {}).items()}
    sim = sim or FunctionalSimulator(TARGET)
    if buffers is not None:
        for core, bufs in zip(sim.cores, buffers):
            core.wtags = []
            for name, arr in bufs.items():
                core.bufs[name][:] = arr
    before = sim_buffers(sim)
    py = run_python(sim, image, channels, pos, length)
    cc = run_csim(csim, tmp_path / f"run{len(list(tmp_path.iterdir()))}", image, channels, pos,
                  length, before, schedule)
    assert_same(py, cc, what)
    return py, cc



# ---------------------------------------------------------------------------------------------
# (b) Hand-written programs per instruction type
# ---------------------------------------------------------------------------------------------
def chained(insns) -> list:
    """The instructions with tokens that order each one after the previous when their units
    differ (SYS releases nothing): correct under any schedule, so both schedules must agree."""
    out = [i.replace() for i in insns]
    for a, b in zip(out, out[1:]):
        ua, ub = isa.FORMATS[a.op].unit, isa.FORMATS[b.op].unit
        if ua != ub and ua != "SYS":
            a.fields["release"] = a["release"] | isa.unit_mask([ub])
            b.fields["wait"] = b["wait"] | isa.unit_mask([ua])
    return out


class Bench:
    """A hand-written program: bytes of every bound HBM channel and one stream per core."""

    def __init__(self, channel_bytes=1 << 16, unbound=()):
        self.chan = {ch: np.zeros(channel_bytes, np.uint8) for chs in TARGET.core_channels
                     for ch in chs if ch not in unbound}
        self.cursor = {ch: 0 for ch in self.chan}
        self.streams = [[] for _ in range(CORES)]

    def put(self, ch, array) -> int:
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        off = self.cursor[ch]
        self.chan[ch][off:off + raw.size] = raw
        self.cursor[ch] = off + -(-raw.size // 64) * 64
        return off

    def port(self, core, k=0) -> int:
        return TARGET.channels_of(core)[k]

    def load(self, core, buf, addr, array, k=0, **kw):
        """Append an LD of a 2-D array (one row per row) into `buf` at `addr`."""
        array = np.atleast_2d(np.asarray(array))
        ch = self.port(core, k)
        row_bytes = array.shape[1] * array.itemsize
        off = self.put(ch, array)
        self.streams[core].append(Instruction("LD", buf=buf, channel=ch, hbm_addr=off, buf_addr=addr,
                                              rows=array.shape[0], row_bytes=row_bytes,
                                              hbm_stride=row_bytes, buf_stride=row_bytes, **kw))

    def add(self, core, *insns):
        self.streams[core].extend(insns)

    def run(self, csim, tmp_path, pos=0, length=0, schedule="program", chain=True, what=""):
        streams = [chained(s) if chain else s for s in self.streams]
        return check(csim, tmp_path, streams, self.chan, pos, length, schedule=schedule, what=what)


def fp16_data(rng, shape, scale=4.0):
    """Random FP16 values with zeros, signed zeros, subnormals and large values mixed in."""
    x = (rng.standard_normal(shape) * scale).astype(F16)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
    flat[picks] = np.array([0, -0.0, 6e-8, -6e-8, 1e-5, -3e-5, 1000, -2000, 0.5, -0.25, 65504,
                            -65504], F16)[:len(picks)]
    return x


SCHEDULES = ["program", "decoupled"]


# ---------------------------------------------------------------------------------------------
# (a) A compiled model: prefill, decode and a second prefill chunk, both executors, same bits
# ---------------------------------------------------------------------------------------------
PROMPT = [5, 17, 42, 3, 99, 120, 7, 8, 9, 10, 200, 31]
MODEL_STEPS = [("prefill", PROMPT, 0, "program"), ("decode", [11], len(PROMPT), "program"),
               ("decode", [250], len(PROMPT) + 1, "decoupled"),
               ("prefill", [4, 77, 123, 6, 2], len(PROMPT) + 2, "decoupled")]


def place_inputs(program, channels, ids):
    rows_in = np.zeros((program.rows, program.dim), F16)
    rows_in[:len(ids)] = program.embedding[np.asarray(ids)]
    raw = rows_in.view(np.uint8).reshape(-1)
    for io in program.io:
        channels[io.input_channel][io.input_offset:io.input_offset + raw.size] = raw


def logits_of(program, channels, rows):
    parts = []
    for io in program.io:
        vc = io.vocab_stop - io.vocab_start
        raw = channels[io.logits_channel][io.logits_offset:io.logits_offset + rows * vc * 2]
        parts.append(raw.view(F16).reshape(rows, vc))
    return np.concatenate(parts, axis=1)


def check_model_steps(csim, tmp_path, program, steps=MODEL_STEPS) -> list:
    """Run a compiled program's step images (kind, token ids, pos, schedule) one after another on
    the same HBM and on-chip state, both executors; every byte must agree.  Returns the Python
    counters of each step."""
    p = program
    channels = {}
    for ch, size in p.channel_size.items():
        arr = np.zeros(size, np.uint8)
        static = p.channel_static.get(ch)
        if static is not None:
            arr[:static.size] = static
        channels[ch] = arr
    static_end = {ch: (p.channel_static[ch].size if ch in p.channel_static else 0) for ch in channels}
    sim = FunctionalSimulator(TARGET)
    counters = []
    for kind, ids, pos, schedule in steps:
        step, _ = BucketTable(p, TARGET).step(kind, pos + len(ids))
        place_inputs(p, channels, ids)
        py, cc = check_image(csim, tmp_path, step.image, channels, pos, len(ids), sim=sim,
                             schedule=schedule, what=f"{kind} at pos {pos} ({schedule})")
        assert py.counters["core0_macs"] > 0
        rows = len(ids) if step.all_logits else 1
        logits = logits_of(p, cc.channels, rows)
        np.testing.assert_array_equal(logits.view(np.uint16),
                                      logits_of(p, py.channels, rows).view(np.uint16))
        assert np.isfinite(logits).all() and np.abs(logits).max() > 0.1
        # the mutable part of each channel (KV cache, I/O regions) was written, equally
        written = [ch for ch in channels if not np.array_equal(channels[ch][static_end[ch]:],
                                                               cc.channels[ch][static_end[ch]:])]
        assert written, "the step wrote nothing to HBM"
        for ch in channels:
            np.testing.assert_array_equal(cc.channels[ch][static_end[ch]:],
                                          py.channels[ch][static_end[ch]:])
        channels = cc.channels
        counters.append(py.counters)
    return counters
