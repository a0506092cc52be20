"""HLS C simulation against the Python FunctionalSimulator: every error case stops with the same
code, core and pc in both executors (decode, run time, packed tiles and sparse operands)."""
from __future__ import annotations

import numpy as np
import pytest
from flightllm_overlay.spec import isa
from flightllm_overlay.spec.isa import Instruction

from hls_harness import (
    BARRIER,
    CORES,
    I8,
    Bench,
    END,
    SCHEDULES,
    SRC,
    TARGET,
    check_image)
from test_hls_csim_packed import mpe_on, packed_ld, random_tile

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
    "stripe-rows": lambda: _img([_raw(_ld(), stripe=2)]),
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
    "stripe-unbound": lambda: _img([], [], [_ld(2, channel=26, stripe=8, rows=1, row_bytes=64)]),
    "hbm-past-end": lambda: _img([_ld(hbm_addr=(256 << 20) - 20)]),
    "buffer-past-end": lambda: _img([], [_ld(1, buf="fsb", buf_addr=4090)]),
    "remote-self-overlap": lambda: _img([_ld(remote=1, remote_core=0, hbm_addr=2, buf_addr=4)]),
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
    "quant-scales-past-end": lambda: _img([_misc(op="quant", out_abuf=1, out2_addr=(2 << 20) - 4)]),
    "rope-odd": lambda: _img([_misc(op="rope", k=7)]),
    "layernorm-bias-past-end": lambda: _img([], [_misc(op="layernorm", b_addr=(2 << 20) - 24)]),
    "misc-dyn-k": lambda: _img([_misc(dyn_k=1, k=4)]),
    "packed-short-tile": lambda: _img([_ld(buf="wbuf", wfmt="packed", wk=32, wbits=3, rows=2,
                                           row_bytes=20)]),
    "packed-zero-fsb-codes": lambda: _img([_ld(buf="wbuf", wfmt="packed", wk=16, wbits=1, rows=16,
                                               row_bytes=64, sparse=1)]),
    "packed-into-gbuf": lambda: _img([_raw(_ld(buf="wbuf", wfmt="packed", wk=32), buf=2)]),
    "packed-group-not-whole": lambda: _img([_raw(_ld(buf="wbuf", wfmt="packed", wk=32, wbits=0,
                                                     wgroup=1), wk=48)]),
    "packed-sparse-rows": lambda: _img([_raw(_ld(buf="wbuf", wfmt="packed", wk=16, wbits=3,
                                                 rows=16, sparse=1), rows=8)]),
    "sparse-mm-wt": lambda: _img([_raw(_mm(n=16, k=16, sparse=1, nnz=16), wt=1)]),
    "sparse-mv-k": lambda: _img([_raw(_mm("MV", n=16, k=16, sparse=1, nnz=16), k=24)]),
    "sparse-mm-zero-codes": lambda: _img([_mm(n=16, k=32, sparse=1, nnz=8)]),
    "sparse-mm-fsb-past-end": lambda: _img([_mm(n=32, k=32, sparse=1, nnz=8, fsb_addr=4094)]),
    "agroup-k-not-whole": lambda: _img([_raw(_mm(k=48), agroup=1)]),
    "agroup-dyn-k": lambda: _img([_raw(_mm(k=64), agroup=1, dyn_k=1)]),
    "agroup-quant-diffuse": lambda: _img([_raw(_misc(op="quant", out_abuf=1, k=64, agroup=1),
                                               diffuse=1)]),
    "agroup-on-eadd": lambda: _img([_raw(_misc(k=64), agroup=1)]),
    "sparse-mm-meta-past-end": lambda: _img([_mm(n=16, k=16, sparse=1, meta_addr=65530,
                                                 meta_len=8)]),
    # wcodes: codes of dense tiles below 8 bits only; an MPE on codes needs dense rows of whole
    # groups and a static shape; code rows are checked with their group parameters
    "wcodes-ld-8bit": lambda: _img([_raw(_ld(buf="wbuf", wfmt="packed", wk=32, wbits=2, wgroup=1),
                                         wbits=3, wcodes=1)]),
    "wcodes-ld-sparse": lambda: _img([], [_raw(_ld(1, buf="wbuf", wfmt="packed", wk=16, wbits=1,
                                                   rows=16, sparse=1), wcodes=1)]),
    "wcodes-ld-not-packed": lambda: _img([_raw(_ld(), wcodes=1)]),
    "wcodes-st": lambda: _img([_raw(Instruction("ST", buf="gbuf"), wcodes=1)]),
    "wcodes-mm-value": lambda: _img([_raw(_mm(k=64), wcodes=5)]),
    "wcodes-mm-k-not-whole": lambda: _img([_raw(_mm(k=48), wcodes=2)]),
    "wcodes-mm-wt": lambda: _img([_raw(_mm(k=64, wcodes=2), wt=1)]),
    "wcodes-mv-sparse": lambda: _img([_raw(_mm("MV", n=16, k=64, sparse=1, nnz=16), wcodes=1)]),
    "wcodes-mm-dyn-k": lambda: _img([], [_raw(_mm(k=64, wcodes=2), dyn_k=1)]),
    "wcodes-mm-stride": lambda: _img([_raw(_mm(k=64, wcodes=2), w_stride=71)]),
    "wcodes-rows-past-end": lambda: _img([_mm(k=64, wcodes=2, w_addr=(2 << 20) - 4 * 72 + 1,
                                              no_wscale=1)]),
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


# ---------------------------------------------------------------------------------------------
# Packed tiles and sparse operands that do not fit: a valid 4-bit (or 8-bit) sparse tile on core 1,
# corrupted one way per case; its LD then an MM over it
# ---------------------------------------------------------------------------------------------
def _corrupt_index(blob, lay, pw):
    """Swap the first two indices of the first row of the first sparse block (now decreasing)."""
    first = int(np.flatnonzero(pw.block_n.reshape(-1) < 16)[0])
    skip = int((pw.block_n.reshape(-1)[:first][pw.block_n.reshape(-1)[:first] < 16]).sum()) * 16
    at = lay["fsb"] + skip // 2          # skip is even: the first two nibbles share one byte
    blob[at] = ((blob[at] & 0xF) << 4) | (blob[at] >> 4)
    return blob


PACKED_ERRORS = {
    # name: (bits, blob change, LD field overrides, MM field overrides, expected error code)
    "ld-corrupt-fsb-code": (4, lambda blob, lay, pw: _set(blob, 0, 3), {}, {}, 3),
    "ld-short-tile": (4, None, {"row_bytes": -1}, {}, 3),
    "ld-wn-mismatch": (4, None, {"wn": +1}, {}, 3),
    "ld-wmeta-mismatch": (4, None, {"wmeta": -1}, {}, 3),
    "ld-indices-not-increasing": (4, _corrupt_index, {}, {}, 3),
    "ld-wbuf-past-end": (4, None, {"buf_addr": (2 << 20) - 600}, {"w_addr": 0, "w_scale": 0}, 2),
    "ld-meta-past-end": (8, None, {"meta_addr": (64 << 10) - 2}, {}, 2),
    "mm-nnz-mismatch": (8, None, {}, {"nnz": -1}, 3),
    "mm-meta-too-short": (8, None, {}, {"meta_len": -2}, 3),
    "mm-indices-not-increasing": (8, _corrupt_index, {}, {}, 3),
    "mm-corrupt-code-in-fsb": (8, None, {}, {"corrupt_fsb": 1}, 3),
    "mm-weights-past-end": (8, None, {}, {"w_addr": (2 << 20) - 64, "w_scale": 0}, 2),
    "mm-scales-misaligned": (8, None, {}, {"w_scale": 512 + 1}, 3),   # inside the loaded tile
}


def _set(blob, i, v):
    blob[i] = v
    return blob


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", list(PACKED_ERRORS))
def test_packed_and_sparse_errors_agree(csim, tmp_path, name, schedule):
    bits, change, ld_fix, mm_fix, code = PACKED_ERRORS[name]
    rng = np.random.default_rng(len(name))
    pw = random_tile(rng, 32, 64, bits, 16, True)
    while (pw.block_n == 16).all() or (pw.block_n < 16).sum() < 2:
        pw = random_tile(rng, 32, 64, bits, 16, True)
    lay = pw.layout()
    b = Bench(channel_bytes=1 << 16)
    ld = packed_ld(b, 1, pw, 512, fsb_addr=3, meta_addr=10)
    if change is not None:                  # rewrite the tile in HBM
        blob = change(pw.blob().copy(), lay, pw)
        b.chan[ld["channel"]][ld["hbm_addr"]:ld["hbm_addr"] + blob.size] = blob
    b.streams[1][-1] = ld.replace(**{k: (v if k.endswith("addr") else ld[k] + v)
                                     for k, v in ld_fix.items()})
    b.load(1, "abuf", 0, rng.integers(-128, 128, (2, 64), dtype=np.int64).astype(I8), k=2)
    b.load(1, "abuf", 60_000, np.ones((1, 2), np.float32), k=2)
    fix = dict(mm_fix)
    if fix.pop("corrupt_fsb", 0):
        b.load(1, "fsb", 4, np.array([[5]], np.uint8), k=3)
    mm = mpe_on("MM", pw, 2, 512, 3, 10)
    b.add(1, mm.replace(**{k: (v if k.startswith("w_") else mm[k] + v) for k, v in fix.items()}))
    py, cc = b.run(csim, tmp_path, schedule=schedule, what=name)
    assert py.error is not None and py.error[0] == code, (name, py.error, py.message)
    assert py.error[1] == 1


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
