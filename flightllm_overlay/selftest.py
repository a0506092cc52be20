"""On-board self-test: small ISA programs and a model decode step, run on the device and on the reference simulator, compared byte for byte.

Each program runs on the overlay's device (a card, or the simulated U280) through the drivers, as
`Session` runs a model, and on a fresh `FunctionalSimulator` over an in-process `DeviceMemory`
laid out like the card's banks.  Every byte of every HBM buffer given to the program must then
be equal; the first difference is reported (program, bank, offset, expected and actual byte).
Programs never read on-chip bytes they did not write, so earlier runs cannot make them differ.
Covered: LD/ST through every buffer (strides, all dyn modes); MM and MV of random INT8 (both
weight layouts, with and without weight scales); every MISC op; remote LD across cores behind a SYS barrier; a decode step of a tiny random LLaMA.
On a card, softmax and silu use an FP32 exp that may differ in its last bit (docs/isa.md
section 5); that would show here as a rare FP16 rounding-tie difference.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from .spec import isa
from .errors import FlightLLMError
from .spec.isa import Instruction

__all__ = ["Mismatch", "ProgramResult", "SelfTestProgram", "SelfTestReport", "build_programs",
           "device_label", "run_program", "run_selftest"]

END, BARRIER = Instruction("SYS", op="end"), Instruction("SYS", op="barrier")
MISC_TESTED = ("eadd", "emul", "softmax", "layernorm", "rmsnorm", "silu", "relu", "rope", "quant",
               "amax")


@dataclass(frozen=True)
class Mismatch:
    """The first byte where the device and the reference simulator disagree."""

    program: str
    buffer: str                  # bank tag of the buffer, e.g. "HBM[4]"
    offset: int                  # byte offset inside the program's buffer in that bank
    expected: int                # the reference simulator's byte
    got: int                     # the device's byte
    differing: int               # bytes that differ in this buffer
    size: int                    # bytes in this buffer

    def __str__(self):
        return (f"program {self.program}: {self.buffer} byte 0x{self.offset:x}: expected "
                f"0x{self.expected:02x}, got 0x{self.got:02x} ({self.differing} of {self.size} "
                f"bytes differ)")


@dataclass
class ProgramResult:
    """Outcome of one program: passed, a mismatch, or an error (from the device or the program)."""

    name: str
    what: str
    bytes_compared: int = 0
    instructions: int = 0
    seconds: float = 0.0
    mismatch: Mismatch | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.mismatch is None and self.error is None

    def row(self) -> str:
        status = "PASS" if self.passed else ("MISMATCH" if self.mismatch else "ERROR")
        return (f"  {self.name:14s} {self.instructions:6d} {self.bytes_compared:10d} "
                f"{self.seconds:7.2f}s  {status}")


@dataclass
class SelfTestReport:
    """All results of a self-test on one device; `table()` is what `flightllm selftest` prints."""

    device: str
    results: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def first_mismatch(self) -> Mismatch | None:
        return next((r.mismatch for r in self.results if r.mismatch), None)

    def header(self) -> str:
        return (f"FlightLLM self-test on {self.device}\n"
                f"  {'program':14s} {'insns':>6s} {'bytes':>10s} {'time':>8s}  result")

    def summary(self) -> str:
        failed = [r for r in self.results if not r.passed]
        return "\n".join([f"{len(self.results)} programs: {len(self.results) - len(failed)} "
                          f"passed, {len(failed)} failed"]
                         + [f"  FAILED {r.name} ({r.what}): {r.mismatch or r.error}" for r in failed])

    def table(self) -> str:
        return "\n".join([self.header(), *(r.row() for r in self.results), self.summary()])

    __str__ = table


@dataclass
class SelfTestProgram:
    """An instruction image plus the initial bytes of each HBM channel buffer it is given."""

    name: str
    what: str
    image: np.ndarray            # uint32, isa.pack_image
    inputs: dict                 # HBM channel -> uint8 array (the whole buffer)
    pos: int = 0
    length: int = 0


# --- Building the hand-written programs ----------
def _move(op, buf, ch, hbm, addr, rows, row_bytes, hbm_stride=None, buf_stride=None, **kw):
    return Instruction(op, buf=buf, channel=ch, hbm_addr=hbm, buf_addr=addr, rows=rows,
                       row_bytes=row_bytes, hbm_stride=hbm_stride or row_bytes,
                       buf_stride=buf_stride or row_bytes, **kw)


def _chain(insns) -> list:
    """Order strictly: a token from each instruction to the next when their units differ."""
    out = []
    for i, insn in enumerate(insns):
        prev = insns[i - 1].unit if i else insn.unit
        nxt = insns[i + 1].unit if i + 1 < len(insns) else insn.unit
        out.append(insn.replace(wait=0 if prev == insn.unit else isa.unit_mask([prev]),
                                release=0 if nxt == insn.unit else isa.unit_mask([nxt])))
    return out


class _Builder:
    """Places random data in each core's HBM channels and collects per-core instruction lists."""

    def __init__(self, target):
        self.target = target
        self.data = {ch: bytearray() for chs in target.core_channels for ch in chs}
        self.streams = [[] for _ in range(target.cores)]

    def put(self, core: int, array, k: int = 0) -> tuple:
        """Append `array`'s bytes to channel k of `core` (64-byte aligned); (channel, offset)."""
        chs = self.target.core_channels[core]
        buf = self.data[chs[k % len(chs)]]
        buf += bytes(-len(buf) % 64)
        off = len(buf)
        buf += np.ascontiguousarray(array).tobytes()
        return chs[k % len(chs)], off

    def reserve(self, core: int, nbytes: int, k: int = 0) -> tuple:
        return self.put(core, np.zeros(nbytes, np.uint8), k)

    def program(self, name, what, pos=0, length=0) -> SelfTestProgram:
        image = isa.pack_image([isa.encode_stream(s or [END]) for s in self.streams])
        inputs = {ch: np.frombuffer(bytes(b) + bytes(-len(b) % 4096), np.uint8).copy()
                  for ch, b in self.data.items() if b}
        return SelfTestProgram(name, what, image, inputs, pos, length)


def _move_program(target, rng):
    b = _Builder(target)
    for c in range(target.cores):
        insns = []
        for i, buf in enumerate(isa.BUFFERS):            # strided rows through every buffer
            ch, off = b.put(c, rng.integers(0, 256, (6, 48), np.uint8), k=i)
            och, ooff = b.reserve(c, 6 * 56, k=i + 1)
            insns += [_move("LD", buf, ch, off, 128, 6, 40, hbm_stride=48, buf_stride=64),
                      _move("ST", buf, och, ooff, 128, 6, 40, hbm_stride=56, buf_stride=64)]
        src, out = b.put(c, rng.integers(0, 256, (8, 32), np.uint8)), [
            b.reserve(c, 8 * 32, k=2 + j) for j in range(3)]
        insns += [_move("LD", "gbuf", *src, 0x1000, 8, 32, dyn="history"),    # pos+len rows
                  _move("ST", "gbuf", *out[0], 0x1000, 8, 32, dyn="at_pos"),  # len rows at pos
                  _move("ST", "gbuf", *out[1], 0x1000, 8, 32, dyn="step"),    # len rows at 0
                  _move("LD", "gbuf", *src, 0x2000, 8, 32, dyn="last"),       # row len - 1
                  _move("ST", "gbuf", *out[2], 0x2000, 1, 32)]
        b.streams[c] = _chain(insns) + [END]
    return b.program("move", "LD/ST through every buffer, strides, dyn modes", pos=2, length=3)


def _mpe_program(target, rng, op):
    b = _Builder(target)
    m, n, k = (24 if op == "MM" else 5), 40, 80
    a_stride = k + 16
    for c in range(target.cores):
        i8 = lambda *shape: rng.integers(-127, 128, shape, np.int8)            # noqa: E731
        scales = lambda count: rng.uniform(1e-3, 1e-2, count).astype(np.float32)  # noqa: E731
        a, w, wt = b.put(c, i8(m, k)), b.put(c, i8(n, k), 1), b.put(c, i8(k, n), 2)
        sa, sw = b.put(c, scales(m)), b.put(c, scales(n), 1)
        o1, o2 = b.reserve(c, m * 2 * n, 3), b.reserve(c, m * 2 * n, 4)
        insns = [_move("LD", "abuf", *a, 0, m, k, buf_stride=a_stride),
                 _move("LD", "abuf", *sa, 0x8000, 1, 4 * m),
                 _move("LD", "wbuf", *w, 0, n, k),
                 _move("LD", "wbuf", *sw, 0x10000, 1, 4 * n),
                 Instruction(op, m=m, n=n, k=k, a_addr=0, a_scale=0x8000, w_addr=0,
                             w_scale=0x10000, out_addr=0, a_stride=a_stride),
                 _move("ST", "gbuf", *o1, 0, m, 2 * n),
                 _move("LD", "wbuf", *wt, 0x20000, k, n),
                 Instruction(op, wt=1, no_wscale=1, m=m, n=n, k=k, a_addr=0, a_scale=0x8000,
                             w_addr=0x20000, out_addr=0x4000, a_stride=a_stride,
                             out_stride=2 * n + 32),
                 _move("ST", "gbuf", *o2, 0x4000, m, 2 * n, buf_stride=2 * n + 32)]
        b.streams[c] = _chain(insns) + [END]
    return b.program(op.lower(), f"{op} of random INT8 (m={m}, n={n}, k={k}), both layouts")


def _misc_program(target, rng, op):
    b = _Builder(target)
    rows, k = (64, 16) if op == "amax" else (8, {"softmax": 16, "rope": 32}.get(op, 64))
    fields = {"eadd": {}, "emul": dict(bcast_b=1, b_f32=1), "silu": {}, "relu": {},
              "layernorm": dict(imm=isa.f32_bits(1e-5)),
              "softmax": dict(causal=1, groups=4, imm=isa.f32_bits(0.25)),
              "rmsnorm": dict(imm=isa.f32_bits(1e-5)), "rope": dict(groups=4),
              "quant": dict(out_abuf=1, out2_addr=0x1000), "amax": dict(out2_addr=0x10000)}[op]
    for c in range(target.cores):
        f16 = lambda *shape: (2 * rng.standard_normal(shape)).astype(np.float16)  # noqa: E731
        a = b.put(c, f16(rows, k))
        insns = [_move("LD", "gbuf", *a, 0, rows, 2 * k)]
        arr = {"eadd": f16(rows, k), "emul": rng.standard_normal((1, k)).astype(np.float32),
               "rmsnorm": f16(1, k), "layernorm": f16(2, k), "rope": rng.uniform(-1, 1, (4, k)).astype(np.float16)}
        if op in arr:                                 # operand b: per row, one row, rope table
            insns.append(_move("LD", "gbuf", *b.put(c, arr[op], 1), 0x8000, len(arr[op]),
                               arr[op][0].nbytes))
        insns.append(Instruction("MISC", op=op, rows=rows, k=k, a_addr=0, b_addr=0x8000,
                                 out_addr=0 if op == "quant" else 0x10000, **fields))
        if op == "quant":
            insns += [_move("ST", "abuf", *b.reserve(c, rows * k, 2), 0, rows, k),
                      _move("ST", "abuf", *b.reserve(c, 4 * rows, 3), 0x1000, 1, 4 * rows)]
        elif op == "amax":                            # the rows' maxima, FP32
            insns.append(_move("ST", "gbuf", *b.reserve(c, 4 * rows, 2), 0x10000, 1, 4 * rows))
        else:
            insns.append(_move("ST", "gbuf", *b.reserve(c, rows * 2 * k, 2), 0x10000, rows, 2 * k))
        b.streams[c] = _chain(insns) + [END]
    return b.program(f"misc_{op}", f"MISC {op} on random FP16 ({rows}x{k})", pos=3, length=4)


def _remote_program(target, rng):
    """Phase 1: core c loads its own rows at X_c (gbuf and wbuf).  SYS barrier.  Phase 2: core c
    copies core c+1's X_{c+1} with a remote LD (no core writes what another reads in a phase)."""
    b = _Builder(target)
    cores, rows, row_bytes = target.cores, 4, 64
    region = [0x1000 * (c + 1) for c in range(cores)]
    for c in range(cores):
        s = (c + 1) % cores
        first = [_move("LD", buf, *b.put(c, rng.integers(0, 256, (rows, row_bytes), np.uint8), i),
                       region[c], rows, row_bytes) for i, buf in enumerate(("gbuf", "wbuf"))]
        second = []
        for i, buf in enumerate(("gbuf", "wbuf")):
            second += [Instruction("LD", buf=buf, remote=1, remote_core=s, hbm_addr=region[s],
                                   hbm_stride=row_bytes, buf_addr=region[s], rows=rows,
                                   row_bytes=row_bytes, buf_stride=row_bytes),
                       _move("ST", buf, *b.reserve(c, rows * row_bytes, 2 + i), region[s], rows,
                             row_bytes)]
        b.streams[c] = _chain(first) + [BARRIER] + _chain(second) + [END]
    return b.program("remote_ld", f"remote LD across {cores} cores behind a SYS barrier")


def _model_program(target, seed: int) -> SelfTestProgram:
    from .compiler import compile_model
    from .model import load_checkpoint
    from .model.testing import make_tiny_llama
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = load_checkpoint(make_tiny_llama(f"{tmp}/tiny-llama", seed=seed))
        p = compile_model(ckpt, target=target, ctx=target.decode_bucket * 2, smooth=False)
    rng = np.random.default_rng(seed)
    inputs = {ch: np.zeros(size, np.uint8) for ch, size in p.channel_size.items()}
    for ch, static in p.channel_static.items():
        inputs[ch][:static.size] = static
    rows_in = np.zeros((p.rows, p.dim), np.float16)
    rows_in[0] = p.embedding[int(rng.integers(p.vocab_size))]
    raw = rows_in.view(np.uint8).reshape(-1)
    for io in p.io:                                   # as Session.run writes a step's input
        inputs[io.input_channel][io.input_offset:io.input_offset + raw.size] = raw
    return SelfTestProgram("decode_step", f"decode step of a tiny random LLaMA "
                           f"({p.model['n_layers']} layers, dim {p.dim})",
                           p.step("decode").image, inputs, pos=2, length=1)


def build_programs(target, seed: int = 0, model: bool = True) -> list:
    """The self-test programs for `target` (config.Target), from random data seeded by `seed`."""
    rng = np.random.default_rng(seed)
    programs = [_move_program(target, rng), _mpe_program(target, rng, "MM"),
                _mpe_program(target, rng, "MV"), *(_misc_program(target, rng, op)
                                                    for op in MISC_TESTED)]
    programs += [_remote_program(target, rng)] if target.cores > 1 else []
    return programs + ([_model_program(target, seed)] if model else [])


# --- Running and comparing ----------
def _reference(overlay, prog: SelfTestProgram):
    """Bytes of every channel buffer after the program ran on a fresh reference simulator."""
    from .sim.functional import FunctionalSimulator
    from .sim.memory import DeviceMemory
    memory = DeviceMemory.from_mem_dict(overlay.mem_dict)

    def put(data, tag):
        alloc = memory.bank(tag).allocate(data.nbytes)
        alloc.device[:] = data.view(np.uint8)
        return alloc

    allocs = {ch: put(data, f"HBM[{ch}]") for ch, data in prog.inputs.items()}
    image = put(prog.image, f"DDR[{overlay.target.instruction_bank}]")
    counters = FunctionalSimulator(overlay.target).run(
        memory, image.address, {"pos": prog.pos, "len": prog.length},
        {ch: a.address for ch, a in allocs.items()})
    return {ch: a.device.copy() for ch, a in allocs.items()}, counters.total_instructions


def _on_device(overlay, prog: SelfTestProgram, timeout):
    """Bytes of every channel buffer after the program ran on the overlay's device."""
    import pynq
    buffers = []

    def put(data, bank):
        buffers.append(pynq.allocate(data.shape, data.dtype, target=getattr(overlay, bank)))
        buffers[-1][:] = data
        buffers[-1].sync_to_device()
        return buffers[-1]

    try:
        channels = {ch: put(d, f"HBM{ch}") for ch, d in sorted(prog.inputs.items())}
        image = put(prog.image, f"DDR{overlay.target.instruction_bank}")
        try:
            overlay.run(image, prog.pos, prog.length, channels, timeout=timeout)
        except FlightLLMError as exc:                     # stop the device before freeing
            try:
                overlay.reset()
            except Exception as reset_exc:                # reported, not hidden
                exc.args = (f"{exc.args[0]} (and the soft reset failed: {reset_exc})",)
            raise
        for buf in channels.values():
            buf.sync_from_device()
        return {ch: np.array(buf, copy=True) for ch, buf in channels.items()}
    finally:
        for buf in buffers:
            buf.freebuffer()


def _compare(name: str, want: dict, got: dict) -> Mismatch | None:
    for ch in sorted(want):
        w, g = want[ch], got[ch]
        diff = np.flatnonzero(w != g)
        if diff.size:
            at = int(diff[0])
            return Mismatch(name, f"HBM[{ch}]", at, int(w[at]), int(g[at]), int(diff.size), w.size)
    return None


def run_program(overlay, prog: SelfTestProgram, timeout: float | None = None) -> ProgramResult:
    """Run one program on the device and on the reference simulator and compare the buffers."""
    t0 = time.perf_counter()
    result = ProgramResult(prog.name, prog.what,
                           bytes_compared=sum(d.size for d in prog.inputs.values()))
    try:
        want, result.instructions = _reference(overlay, prog)
    except FlightLLMError as exc:
        result.error = (f"the reference simulator refused the program ({type(exc).__name__}: "
                        f"{exc}); this is a bug of the self-test, please report it")
        return result
    try:
        got = _on_device(overlay, prog, timeout)
    except FlightLLMError as exc:
        result.error = f"the device failed: {type(exc).__name__}: {exc}"
    else:
        result.mismatch = _compare(prog.name, want, got)
    result.seconds = time.perf_counter() - t0
    return result


def run_selftest(overlay=None, seed: int = 0, model: bool = True, timeout: float | None = None,
                 programs=None, progress=None) -> SelfTestReport:
    """Run every self-test program on `overlay` (default: FlightLLMOverlay() on the active
    device).  `timeout` bounds each run (default: the overlay's); `progress(result)` is called
    after each program.  Returns a SelfTestReport; `report.passed` says whether all agreed."""
    if overlay is None:
        from .overlay import FlightLLMOverlay
        overlay = FlightLLMOverlay()
    report = SelfTestReport(device_label(overlay))
    for prog in programs if programs is not None else build_programs(overlay.target, seed, model):
        report.results.append(run_program(overlay, prog, timeout))
        if progress is not None:
            progress(report.results[-1])
    return report


def device_label(overlay) -> str:
    """E.g. ``xilinx_u280_sim (simulated, no FPGA)`` or ``<shell name> (card)``."""
    kind = "simulated, no FPGA" if getattr(overlay, "is_simulated", False) else "card"
    return f"{getattr(overlay.device, 'name', overlay.device)} ({kind})"
