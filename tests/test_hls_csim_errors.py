"""HLS C simulation against the Python FunctionalSimulator: every error case stops with the same
code, core and pc in both executors."""
from __future__ import annotations

import numpy as np
import pytest
from flightllm_overlay import isa
from flightllm_overlay.isa import Instruction

from hls_harness import (
    BARRIER,
    CORES,
    END,
    SCHEDULES,
    SRC,
    TARGET,
    check_image)

# FP16 overflow to inf (and inf - inf) is part of the MISC/MPE definitions these cases exercise.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

# ---------------------------------------------------------------------------------------------
# Errors: the same code, core and pc as the Python simulator
# ---------------------------------------------------------------------------------------------
def _ld(core=0, **kw):
    f = dict(buf="gbuf", channel=TARGET.channels_of(core)[0], hbm_addr=0, buf_addr=0, rows=2,
             row_bytes=16, hbm_stride=16, buf_stride=16)
    f.update(kw)
    return Instruction("LD", **f)


def _misc(**kw):
    f = dict(op="eadd", rows=2, k=8, a_addr=0, b_addr=64, out_addr=128)
    f.update(kw)
    return Instruction("MISC", **f)


def _mm(op="MM", **kw):
    f = dict(m=2, n=4, k=8, a_addr=0, a_scale=64, w_addr=0, w_scale=64, out_addr=0)
    f.update(kw)
    return Instruction(op, **f)


def _raw(insn, **bits):
    """Encode `insn`, then overwrite raw fields (to build words encode refuses)."""
    fmt = isa.FORMATS[insn.op]
    words = isa.encode(insn)
    value = sum(w << (32 * i) for i, w in enumerate(words))
    for name, v in bits.items():
        if name == "reserved":
            value |= v << fmt.bits
            continue
        off, width = next((o, w) for n, o, w in fmt.layout if n == name)
        value = value & ~(((1 << width) - 1) << off) | (v << off)
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(fmt.words)]


def _img(*streams, end=True):
    streams = list(streams) + [[]] * (CORES - len(streams))
    out = []
    for s in streams:
        words = []
        for x in list(s) + ([END] if end else []):
            words.extend(isa.encode(x) if isinstance(x, Instruction) else x)
        out.append(np.asarray(words, np.uint32))
    return isa.pack_image(out)


LD_MM = isa.unit_mask(["MM"])
ERROR_CASES = {
    # decode time
    "bad-magic": lambda: np.array([0, 1, 3, 4], np.uint32),
    "bad-version": lambda: np.concatenate([[isa.IMAGE_MAGIC, 2], _img([])[2:]]).astype(np.uint32),
    "two-cores": lambda: isa.pack_image([isa.encode_stream([END])] * 2),
    "table-past-end": lambda: np.concatenate([_img([])[:5], [999], _img([])[6:]]).astype(np.uint32),
    "illegal-opcode": lambda: _img([], [[0x6]]),
    "cut-instruction": lambda: _img([END], [END], [END, isa.encode(_ld(2))[:3]], end=False),
    "reserved-bits": lambda: _img([_raw(_misc(), reserved=1)]),
    "own-unit-wait": lambda: _img([], [_raw(_ld(1), wait=1)]),
    "bad-enum": lambda: _img([_raw(_ld(), dyn=6)]),
    "st-remote": lambda: _img([_raw(Instruction("ST", buf="gbuf"), remote=1)]),
    "stripe-rows": lambda: _img([_raw(_ld(), stripe=1)]),
    "mv-rows": lambda: _img([_raw(_mm("MV"), m=17)]),
    "wfmt-into-gbuf": lambda: _img([_raw(_ld(), wfmt=1)]),
    "no-end": lambda: _img([_ld()], end=False),
    # run time
    "wait-without-release": lambda: _img([_ld(), _mm(wait=isa.unit_mask(["LD"]))],
                                         [_ld(1, wait=LD_MM)]),
    "unconsumed-token": lambda: _img([], [_ld(1, release=LD_MM)]),
    "sys-release": lambda: _img([Instruction("SYS", op="barrier", release=1)], [BARRIER], [BARRIER]),
    "cores-disagree": lambda: _img([BARRIER], [BARRIER], []),
    "error-in-second-phase": lambda: _img([BARRIER, _ld(buf="fsb", buf_addr=4090)], [BARRIER],
                                          [BARRIER]),
    "channel-not-owned": lambda: _img([_ld(channel=1)]),
    "channel-unbound": lambda: _img([], [], [_ld(2, channel=30)]),
    "stripe-unbound": lambda: _img([], [], [_ld(2, channel=26, stripe=3, rows=1, row_bytes=64)]),
    "hbm-past-end": lambda: _img([_ld(hbm_addr=(256 << 20) - 20)]),
    "buffer-past-end": lambda: _img([], [_ld(1, buf="fsb", buf_addr=4090)]),
    "remote-self": lambda: _img([_ld(remote=1, remote_core=0)]),
    "remote-missing": lambda: _img([_ld(remote=1, remote_core=3)]),
    "at-pos-too-long": lambda: _img([_ld(dyn="at_pos", rows=2)]),
    "last-without-len": lambda: _img([], [_ld(1, dyn="last")]),
    "mpe-misaligned-scale": lambda: _img([_mm(a_scale=66)]),
    "mpe-misaligned-out": lambda: _img([_mm(out_addr=3)]),
    "mpe-out-stride": lambda: _img([_mm(out_stride=9)]),
    "mpe-dyn-n": lambda: _img([_mm(dyn_n=1, n=4)]),
    "mpe-weights-past-end": lambda: _img([_mm(w_addr=(2 << 20) - 8)]),
    "misc-misaligned": lambda: _img([_misc(a_addr=1)]),
    "misc-out-abuf": lambda: _img([_misc(out_abuf=1)]),
    "quant-without-out-abuf": lambda: _img([_misc(op="quant")]),
    "quant-scales-past-end": lambda: _img([_misc(op="quant", out_abuf=1, out2_addr=(512 << 10) - 4)]),
    "rope-odd": lambda: _img([_misc(op="rope", k=7)]),
    "layernorm-bias-past-end": lambda: _img([], [_misc(op="layernorm", b_addr=(2 << 20) - 24)]),
    "misc-dyn-k": lambda: _img([_misc(dyn_k=1, k=4)]),
    "int4-short-tile": lambda: _img([_ld(buf="wbuf", wfmt="int4", wk=32, rows=2, row_bytes=20)]),
    "first-error-wins": lambda: _img([_ld(), _misc(op="rope", k=7), _ld(buf="fsb", buf_addr=4090)]),
}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_errors_agree(csim, tmp_path, name, schedule):
    image = ERROR_CASES[name]()
    channels = {ch: np.zeros(4096, np.uint8) for chs in TARGET.core_channels for ch in chs
                if ch not in (26, 30)}
    py, cc = check_image(csim, tmp_path, image, channels, pos=3, length=0 if "last" in name else 4,
                         schedule=schedule, what=name)
    assert py.error is not None, f"{name}: the Python simulator accepted the program"


def test_kernel_arguments_follow_the_block_design():
    """Each kernel's s_axilite arguments are hw/design.py's registers, in their order (so the
    Vitis register map matches the drivers and the simulated device), and every m_axi bundle is
    the design's port name."""
    import re

    from flightllm_overlay.hw.design import block_design
    bd = block_design("u280")
    files = {"scheduler": "scheduler.cpp", "mpe": "mpe.cpp", "misc": "misc.cpp",
             "memctrl": "memctrl.cpp"}
    for kernel, fname in files.items():
        text = (SRC / fname).read_text()
        sig = re.search(rf"^void {kernel}\((.*?)\)\s*{{", text, re.S | re.M)
        assert sig, kernel
        args = [re.split(r"[\s*&]+", a.strip())[-1] for a in sig.group(1).split(",")]
        unit = next(u for u in bd.compute_units if u.kernel == kernel)
        regs = [r.name for r in unit.registers]
        assert args[:len(regs)] == regs, (kernel, args, regs)
        for reg in regs:
            assert re.search(rf"INTERFACE mode = s_axilite port = {reg} bundle = control", text), reg
        for port in unit.ports:
            bundle = port.name.removeprefix("m_axi_")
            assert re.search(rf"INTERFACE mode = m_axi port = \w+ bundle = {bundle}\b", text), port
