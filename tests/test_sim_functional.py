"""The functional simulator on small hand-written programs: results, dyn modes, tokens, errors."""
from __future__ import annotations

import numpy as np
import pytest

from flightllm_overlay.spec import isa
from flightllm_overlay.config import load_target
from flightllm_overlay.errors import AddressError, ProgramError
from flightllm_overlay.spec.isa import FORMATS, Instruction
from flightllm_overlay.spec import arithmetic as U
from flightllm_overlay.sim.functional import FunctionalSimulator

TARGET = load_target("u280")
F16, F32, I8 = np.float16, np.float32, np.int8
PROGRAM = 0x0                                   # the image lives at device address 0
REGION = 0x20000                                # bytes of device memory behind each HBM channel
CH_BASE = {ch: REGION * (ch + 1) for ch in range(TARGET.hbm_channels)}
END, BARRIER = Instruction("SYS", op="end"), Instruction("SYS", op="barrier")
LDW = FORMATS["LD"].words


class Memory:
    """Flat device memory with the three calls the simulator makes.

    Like DeviceMemory, versions are kept per buffer: here the program area and each channel's
    region each have one, bumped by host writes and by the simulator's `touch`.
    """

    def __init__(self):
        self.data = np.zeros(REGION * (TARGET.hbm_channels + 1), np.uint8)
        self.vers = np.ones(TARGET.hbm_channels + 1, np.int64)
        self.touched = []

    def _regions(self, addr, nbytes):
        return slice(addr // REGION, (addr + max(nbytes, 1) - 1) // REGION + 1)

    def view(self, addr, nbytes):
        assert 0 <= addr and addr + nbytes <= self.data.size, (hex(addr), nbytes)
        return self.data[addr:addr + nbytes]

    def version(self, addr, nbytes):
        return tuple(self.vers[self._regions(addr, nbytes)])

    def touch(self, addr, nbytes):
        self.touched.append((addr, nbytes))
        self.bump(addr, nbytes)

    def bump(self, addr, nbytes=1):
        self.vers[self._regions(addr, nbytes)] += 1

    def write(self, addr, array, bump=True):
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self.data[addr:addr + raw.size] = raw
        if bump:
            self.bump(addr, raw.size)

    def read(self, addr, shape, dtype):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.data[addr:addr + n].view(dtype).reshape(shape).copy()


def ld(buf, ch, hbm, addr, rows, row_bytes, hbm_stride=None, buf_stride=None, **kw):
    return Instruction("LD", buf=buf, channel=ch, hbm_addr=hbm, buf_addr=addr, rows=rows,
                       row_bytes=row_bytes, hbm_stride=hbm_stride or row_bytes,
                       buf_stride=buf_stride or row_bytes, **kw)


def st(buf, ch, hbm, addr, rows, row_bytes, hbm_stride=None, buf_stride=None, **kw):
    return Instruction("ST", buf=buf, channel=ch, hbm_addr=hbm, buf_addr=addr, rows=rows,
                       row_bytes=row_bytes, hbm_stride=hbm_stride or row_bytes,
                       buf_stride=buf_stride or row_bytes, **kw)


class Prog:
    """One core's program under construction: stage arrays in its HBM channels, load, read back."""

    def __init__(self, mem, core=0):
        self.mem, self.core, self.insns = mem, core, []
        self.cursor = {ch: 0 for ch in TARGET.channels_of(core)}

    def channel(self, i):
        return TARGET.channels_of(self.core)[i]

    def place(self, array, ch_index=0, bump=True):
        """Put an array in HBM; returns (channel, offset)."""
        ch = self.channel(ch_index)
        off = self.cursor[ch]
        nbytes = np.asarray(array).nbytes
        self.cursor[ch] = off + (nbytes + 63) // 64 * 64
        assert self.cursor[ch] <= REGION
        self.mem.write(CH_BASE[ch] + off, array, bump)
        return ch, off

    def load(self, buf, addr, array, ch_index=0, buf_stride=None, **kw):
        array = np.atleast_2d(np.asarray(array))
        ch, off = self.place(array, ch_index)
        row_bytes = array.shape[1] * array.itemsize
        self.insns.append(ld(buf, ch, off, addr, array.shape[0], row_bytes,
                             buf_stride=buf_stride, **kw))
        return ch, off

    def store(self, buf, addr, shape, dtype, buf_stride=None, ch_index=2):
        """ST a (rows, cols) array of dtype; returns a function reading it after the run."""
        rows, cols = shape
        row_bytes = cols * np.dtype(dtype).itemsize
        ch, off = self.place(np.zeros(rows * row_bytes, np.uint8), ch_index)
        self.insns.append(st(buf, ch, off, addr, rows, row_bytes, buf_stride=buf_stride))
        return lambda: self.mem.read(CH_BASE[ch] + off, shape, dtype)


def image(streams: dict):
    """An image from per-core instruction lists or raw word lists; unnamed cores only end."""
    out = []
    for c in range(TARGET.cores):
        s = streams.get(c, [END])
        out.append(isa.encode_stream(s) if s and isinstance(s[0], Instruction)
                   else np.asarray(s, np.uint32))
    return isa.pack_image(out)


def run(mem, streams: dict, sim=None, pos=0, length=0, base=None):
    mem.write(PROGRAM, image(streams))
    sim = sim or FunctionalSimulator(TARGET)
    counters = sim.run(mem, PROGRAM, {"pos": pos, "len": length},
                       CH_BASE if base is None else base)
    return sim, counters


def raises(streams, exc_type, match, core, pc, **kw):
    """Run expecting exc_type with .core and .pc set as given."""
    with pytest.raises(exc_type, match=match) as info:
        run(Memory(), streams, **kw)
    assert (info.value.core, info.value.pc) == (core, pc), str(info.value)
    return info.value


def bits(x):
    return np.ascontiguousarray(x).view(np.uint16)


# ---------------------------------------------------------------------------------------------
# MPE round trips
# ---------------------------------------------------------------------------------------------
def mpe_program(mem, op, m, n, k, wt=0, strided_weights=False, no_wscale=False, seed=0):
    """LD A, scales and weights; one MM/MV; ST the FP16 result. Returns (reader, expected)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(I8)
    a[0] = -128
    w = rng.integers(-128, 128, (n, k)).astype(I8)                 # (N, K), as the math reads it
    a_scale = (rng.random(m) / 50).astype(F32)
    w_scale = (rng.random(n) / 50).astype(F32)
    stored = np.ascontiguousarray(w.T if wt else w)
    w_stride = stored.shape[1] + 32 if strided_weights else 0       # 0: packed default
    p = Prog(mem)
    p.load("abuf", 0x0, a)
    p.load("abuf", 0x20000, a_scale)
    p.load("wbuf", 0x100, stored, ch_index=1, buf_stride=w_stride or None)
    p.load("wbuf", 0x40000, w_scale, ch_index=1)
    p.insns.append(Instruction(op, m=m, n=n, k=k, wt=wt, no_wscale=int(no_wscale), a_addr=0,
                               a_scale=0x20000, w_addr=0x100, w_scale=0x40000, w_stride=w_stride,
                               out_addr=0x800))
    read = p.store("gbuf", 0x800, (m, n), F16)
    return p, read, U.mpe_reference(a, w, a_scale, None if no_wscale else w_scale)


@pytest.mark.parametrize("op, m", [("MM", 33), ("MV", 5), ("MV", 16)])
@pytest.mark.parametrize("wt", [0, 1])
@pytest.mark.parametrize("strided", [False, True], ids=["snapshot", "strided"])
def test_matmul_round_trip_is_bit_exact(op, m, wt, strided):
    mem = Memory()
    n, k = 24, 1500                                   # K > 1024: chunked exact accumulation
    p, read, want = mpe_program(mem, op, m, n, k, wt=wt, strided_weights=strided)
    _, counters = run(mem, {0: p.insns + [END]})
    np.testing.assert_array_equal(bits(read()), bits(want))
    assert counters.macs == m * n * k
    assert counters.instructions == {"LD": 4, "ST": 1, "MM": int(op == "MM"),
                                     "MV": int(op == "MV"), "MISC": 0, "SYS": TARGET.cores}
    assert counters.hbm_read == {0: m * k + 4 * m, 4: n * k + 4 * n}
    assert counters.hbm_written == {8: 2 * m * n}
    assert (CH_BASE[8], 2 * m * n) in mem.touched


def test_matmul_without_weight_scale():
    mem = Memory()
    p, read, want = mpe_program(mem, "MM", 20, 16, 64, no_wscale=True, seed=3)
    run(mem, {0: p.insns + [END]})
    np.testing.assert_array_equal(bits(read()), bits(want))


# ---------------------------------------------------------------------------------------------
# Dynamic modes: run-time pos / len
# ---------------------------------------------------------------------------------------------
POS, LEN, COMPILED = 3, 2, 6
#: buffer row i <-> HBM row SOURCE[mode][i], with pos=3, len=2 and 6 compiled rows
SOURCE = {"static": [0, 1, 2, 3, 4, 5], "at_pos": [3, 4], "history": [0, 1, 2, 3, 4],
          "step": [0, 1], "last": [LEN - 1]}


def hbm_rows():
    """10 HBM rows of 8 bytes at a 16-byte stride; row r holds 8 * (r + 1) .. 8 * (r + 1) + 7."""
    rows = np.full((10, 16), 0xEE, np.uint8)
    rows[:, :8] = (8 * (np.arange(10)[:, None] + 1) + np.arange(8)).astype(np.uint8)
    return rows


@pytest.mark.parametrize("mode", isa.DYN_MODES)
def test_ld_dynamic_modes(mode):
    mem = Memory()
    p = Prog(mem)
    ch, off = p.place(hbm_rows())
    p.insns.append(ld("gbuf", ch, off, 0x200, COMPILED, 8, hbm_stride=16, dyn=mode))
    read = p.store("gbuf", 0x200, (COMPILED, 8), np.uint8)
    run(mem, {0: p.insns + [END]}, pos=POS, length=LEN)
    want = np.zeros((COMPILED, 8), np.uint8)
    want[:len(SOURCE[mode])] = hbm_rows()[SOURCE[mode], :8]
    np.testing.assert_array_equal(read(), want)


@pytest.mark.parametrize("mode", isa.DYN_MODES)
def test_st_dynamic_modes(mode):
    mem = Memory()
    p = Prog(mem)
    data = hbm_rows()[:COMPILED, :8]
    p.load("gbuf", 0x200, data)
    ch, off = p.place(np.full((10, 16), 0xEE, np.uint8), ch_index=1)
    p.insns.append(st("gbuf", ch, off, 0x200, COMPILED, 8, hbm_stride=16, dyn=mode))
    run(mem, {0: p.insns + [END]}, pos=POS, length=LEN)
    want = np.full((10, 16), 0xEE, np.uint8)
    want[SOURCE[mode], :8] = data[:len(SOURCE[mode])]
    np.testing.assert_array_equal(mem.read(CH_BASE[ch] + off, (10, 16), np.uint8), want)


def test_mm_dynamic_k_and_n_use_pos_plus_len():
    mem = Memory()
    rng = np.random.default_rng(4)
    m, eff = 3, POS + 4
    a = rng.integers(-128, 128, (m, 16)).astype(I8)
    w = rng.integers(-128, 128, (12, 16)).astype(I8)
    a_scale, w_scale = np.full(m, 0.01, F32), (rng.random(12) / 10).astype(F32)
    p = Prog(mem)
    p.load("abuf", 0, a)
    p.load("abuf", 0x1000, a_scale)
    p.load("wbuf", 0, w, ch_index=1)
    p.load("wbuf", 0x1000, w_scale, ch_index=1)
    common = dict(m=m, a_addr=0, a_scale=0x1000, w_addr=0, w_scale=0x1000, a_stride=16,
                  w_stride=16)
    p.insns.append(Instruction("MM", n=12, k=16, dyn_k=1, out_addr=0x100, out_stride=24,
                               **common))
    p.insns.append(Instruction("MM", n=12, k=16, dyn_n=1, out_addr=0x200, out_stride=24,
                               **common))
    out_k = p.store("gbuf", 0x100, (m, 12), F16)
    out_n = p.store("gbuf", 0x200, (m, 12), F16)
    _, counters = run(mem, {0: p.insns + [END]}, pos=POS, length=4)
    want_k = U.mpe_reference(a[:, :eff], w[:, :eff], a_scale, w_scale)
    np.testing.assert_array_equal(bits(out_k()), bits(want_k))
    want_n = U.mpe_reference(a, w[:eff], a_scale, w_scale[:eff])
    np.testing.assert_array_equal(bits(out_n()[:, :eff]), bits(want_n))
    assert not out_n()[:, eff:].any()                         # columns past pos+len untouched
    assert counters.macs == m * 12 * eff + m * eff * 16


# ---------------------------------------------------------------------------------------------
# MISC: every op against units.py
# ---------------------------------------------------------------------------------------------
A_ADDR, B_ADDR, OUT = 0x1000, 0x10000, 0x20000


def run_misc(a, b=None, pos=0, length=0, out_cols=None, **fields):
    """Stage a (and b) in the global buffer with padded strides, run one MISC on core 1."""
    mem = Memory()
    p = Prog(mem, core=1)
    rows, k = a.shape
    a_stride = 2 * k + 8
    p.load("gbuf", A_ADDR, a, buf_stride=a_stride)
    b_stride = 0
    if b is not None:
        b_stride = b.shape[1] * b.itemsize + 8
        p.load("gbuf", B_ADDR, b, buf_stride=b_stride)
    out_stride = 2 * k + 4
    p.insns.append(Instruction("MISC", rows=rows, k=k, a_addr=A_ADDR, b_addr=B_ADDR,
                               out_addr=OUT, a_stride=a_stride, b_stride=b_stride,
                               out_stride=out_stride, **fields))
    if fields.get("op") == "quant":
        q = p.store("abuf", OUT, (rows, k), I8, buf_stride=out_stride)
        group = isa.ACT_GROUPS[fields.get("agroup", 0)]
        s = (p.store("abuf", fields["out2_addr"], (rows, U.group_scale_bytes(group, k)), np.uint8)
             if group else p.store("abuf", fields["out2_addr"], (1, rows), F32))
        read = lambda: (q(), s() if group else s()[0])                        # noqa: E731
    else:
        read = p.store("gbuf", OUT, (rows, k), F16, buf_stride=out_stride)
    _, counters = run(mem, {1: p.insns + [END]}, pos=pos, length=length)
    assert counters.instructions["MISC"] == 1 and counters.misc_elements >= rows
    return read()


RNG = np.random.default_rng(11)
X = (RNG.standard_normal((5, 24)) * 3).astype(F16)
Y = (RNG.standard_normal((5, 24)) * 3).astype(F16)
ROW16 = (RNG.standard_normal((1, 24)) * 2).astype(F16)
ROW32 = (RNG.standard_normal((1, 24)) * 2).astype(F32)


@pytest.mark.parametrize("fields, b, want", [
    (dict(op="eadd"), Y, U.eadd(X, Y)),
    (dict(op="eadd", bcast_b=1), ROW16, U.eadd(X, ROW16)),
    (dict(op="eadd", bcast_b=1, b_f32=1), ROW32, U.eadd(X, ROW32)),
    (dict(op="emul"), Y, U.emul(X, Y)),
    (dict(op="emul", bcast_b=1, b_f32=1), ROW32, U.emul(X, ROW32)),
    (dict(op="silu"), None, U.silu(X)),
    (dict(op="rmsnorm", imm=isa.f32_bits(1e-5)), ROW16, U.rmsnorm(X, ROW16, 1e-5)),
    (dict(op="rmsnorm", b_f32=1, imm=isa.f32_bits(0.5)), ROW32, U.rmsnorm(X, ROW32, 0.5)),
    (dict(op="softmax", imm=isa.f32_bits(0.3)), None, U.softmax(X, 0.3)),
], ids=["eadd", "eadd-bcast", "eadd-bcast-f32", "emul", "emul-bcast-f32", "silu", "rmsnorm",
        "rmsnorm-f32", "softmax"])
def test_misc_op_equals_units(fields, b, want):
    np.testing.assert_array_equal(bits(run_misc(X, b, **fields)), bits(want))


def test_rope_row_r_uses_table_row_r_mod_groups():
    heads, tokens, d = 2, 3, 8
    x = (RNG.standard_normal((heads * tokens, d))).astype(F16)
    table = (RNG.standard_normal((tokens, d))).astype(F16)
    got = run_misc(x, table, op="rope", groups=tokens)
    want = U.rope(x, table[np.arange(heads * tokens) % tokens])
    np.testing.assert_array_equal(bits(got), bits(want))


def test_causal_softmax_with_groups_and_dynamic_k():
    heads, tokens, k = 2, 3, 8
    pos, length = 2, 3
    eff = pos + length
    a = (RNG.standard_normal((heads * tokens, k)) * 4).astype(F16)
    got = run_misc(a, None, pos=pos, length=length, op="softmax", causal=1, dyn_k=1,
                   groups=tokens, imm=isa.f32_bits(0.25))
    token = np.array([0, 1, 2, 0, 1, 2])                              # row r -> r mod groups
    valid = np.arange(eff)[None, :] <= (pos + token)[:, None]
    want = U.softmax(a[:, :eff], 0.25, valid)
    np.testing.assert_array_equal(bits(got[:, :eff]), bits(want))
    assert not got[:, :eff][~valid].any() and got[:, :eff][valid].all()
    assert not got[:, eff:].any()                                     # past pos+len: untouched


def test_quant_writes_int8_and_scales_to_the_activation_buffer():
    a = X.copy()
    a[2] = 0
    q, scale = run_misc(a, None, op="quant", out_abuf=1, out2_addr=0x3000)
    want_q, want_s = U.quantize_rows(a)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(scale, want_s)
    assert scale[2] == 1.0


# ---------------------------------------------------------------------------------------------
# Cores: barriers and remote loads
# ---------------------------------------------------------------------------------------------
def test_remote_ld_after_barrier_reads_the_other_cores_buffers():
    mem = Memory()
    rng = np.random.default_rng(9)
    act = rng.integers(0, 256, (4, 32)).astype(np.uint8)
    wgt = rng.integers(0, 256, (8, 64)).astype(np.uint8)
    p0 = Prog(mem, core=0)
    p0.load("gbuf", 0x300, act)
    p0.load("wbuf", 0x500, wgt)                       # a lazily tracked weight snapshot
    p1 = Prog(mem, core=1)
    p1.insns += [BARRIER,
                 Instruction("LD", buf="gbuf", remote=1, remote_core=0, hbm_addr=0x300,
                             hbm_stride=32, buf_addr=0x700, rows=4, row_bytes=32, buf_stride=48),
                 Instruction("LD", buf="wbuf", remote=1, remote_core=0, hbm_addr=0x500,
                             hbm_stride=64, buf_addr=0x900, rows=8, row_bytes=64, buf_stride=64),
                 # a local copy of the rows just fetched, columns 8..24 of each
                 Instruction("LD", buf="gbuf", remote=1, remote_core=1, hbm_addr=0x708,
                             hbm_stride=48, buf_addr=0x1000, rows=4, row_bytes=16,
                             buf_stride=16)]
    got_act = p1.store("gbuf", 0x700, (4, 48), np.uint8)
    got_wgt = p1.store("wbuf", 0x900, (8, 64), np.uint8)
    got_local = p1.store("gbuf", 0x1000, (4, 16), np.uint8)
    _, counters = run(mem, {0: p0.insns + [BARRIER, END], 1: p1.insns + [END],
                            2: [BARRIER, END]})
    np.testing.assert_array_equal(got_act()[:, :32], act)
    np.testing.assert_array_equal(got_wgt(), wgt)
    np.testing.assert_array_equal(got_local(), act[:, 8:24])
    assert counters.instructions["SYS"] == 2 * TARGET.cores
    assert 1 not in counters.hbm_read                  # a remote load does not touch HBM


@pytest.mark.parametrize("fields, message", [
    (dict(remote_core=3), "remote core"),                              # no such core
    (dict(remote_core=1, hbm_addr=2, buf_addr=4), "overlaps"),         # a local copy onto itself
    (dict(remote_core=0, hbm_addr=(2 << 20) - 2), "remote LD source"),  # source past the end
])
def test_bad_remote_ld_is_an_address_error(fields, message):
    bad = Instruction("LD", buf="gbuf", remote=1, rows=1, row_bytes=4, **fields)
    raises({1: [ld("gbuf", 1, 0, 0, 1, 8), bad, END]}, AddressError, message, 1, LDW)


# ---------------------------------------------------------------------------------------------
# Dependency tokens
# ---------------------------------------------------------------------------------------------
def token_program(mem, extra_wait=False):
    """Tokens LD->MM x2 (FIFO), LD->MV, MM->ST, MV->SYS; extra_wait adds a third MM wait."""
    p = Prog(mem)
    p.load("abuf", 0, np.ones((1, 16), I8), release=["MM"])
    p.load("abuf", 0x100, np.ones((1, 4), F32), release=["MM"])
    p.load("wbuf", 0, np.ones((2, 16), I8), release=["MV"])
    mm = dict(m=1, n=2, k=16, a_scale=0x100, no_wscale=1)
    p.insns += [Instruction("MM", wait=["LD"], **mm),
                Instruction("MM", wait=["LD"], release=["ST"], **mm),
                Instruction("MV", wait=["LD"], release=["SYS"], **mm)]
    if extra_wait:
        p.insns.append(Instruction("MM", wait=["LD"], **mm))
    read = p.store("gbuf", 0, (1, 2), F16)
    p.insns[-1] = p.insns[-1].replace(wait=isa.unit_mask(["MM"]))      # the ST waits for MM
    return p.insns + [Instruction("SYS", op="end", wait=["MV"])], read


def test_tokens_matched_in_fifo_order_run():
    mem = Memory()
    stream, read = token_program(mem)
    run(mem, {0: stream})
    np.testing.assert_array_equal(read(), [[16, 16]])


def test_a_wait_beyond_the_released_tokens_is_a_program_error():
    stream, _ = token_program(Memory(), extra_wait=True)
    pc = 3 * LDW + 3 * FORMATS["MM"].words
    raises({0: stream}, ProgramError, "waits for a token from LD", 0, pc)


def test_wait_without_release_is_a_program_error():
    mm = Instruction("MM", wait=["LD"], m=1, n=1, k=1)
    raises({2: [ld("gbuf", 2, 0, 0, 1, 8), mm, END]}, ProgramError,
           "no earlier instruction released", 2, LDW)


def test_unconsumed_tokens_are_a_program_error():
    raises({2: [ld("gbuf", 2, 0, 0, 1, 8, release=["MISC"]), END]}, ProgramError,
           r"unconsumed dependency tokens \[\('LD', 'MISC', 1\)\]", 2, LDW)


def test_sys_may_not_release_tokens():
    sys_rel = Instruction("SYS", op="barrier", release=["LD"])
    raises({c: [sys_rel, END] for c in range(TARGET.cores)}, ProgramError, "SYS releases", 0, 0)


def test_tokens_do_not_leak_into_the_next_run():
    mem = Memory()
    sim = FunctionalSimulator(TARGET)
    leaky = {0: [ld("gbuf", 0, 0, 0, 1, 8, release=["MM"]), END]}
    with pytest.raises(ProgramError, match="unconsumed"):
        run(mem, leaky, sim=sim)
    with pytest.raises(ProgramError, match="no earlier instruction released"):
        run(mem, {0: [Instruction("MM", wait=["LD"]), END]}, sim=sim)


# ---------------------------------------------------------------------------------------------
# Caches: decoded images and weight snapshots follow memory versions
# ---------------------------------------------------------------------------------------------
def test_weight_snapshot_follows_the_memory_version():
    mem = Memory()
    sim = FunctionalSimulator(TARGET)
    rng = np.random.default_rng(21)
    m, n, k = 2, 8, 32
    a = rng.integers(-128, 128, (m, k)).astype(I8)
    w1 = rng.integers(-128, 128, (n, k)).astype(I8)
    w2 = rng.integers(-128, 128, (n, k)).astype(I8)
    ones = np.full(m, 2 ** -6, F32)
    p = Prog(mem)
    p.load("abuf", 0, a)
    p.load("abuf", 0x100, ones)
    w_ch, w_off = p.load("wbuf", 0, w1, ch_index=1)                 # static: snapshot path
    p.insns.append(Instruction("MM", m=m, n=n, k=k, a_scale=0x100, no_wscale=1, out_addr=0))
    read = p.store("gbuf", 0, (m, n), F16)
    stream = {0: p.insns + [END]}
    run(mem, stream, sim=sim)
    first = read()
    np.testing.assert_array_equal(bits(first), bits(U.mpe_reference(a, w1, ones, None)))
    # the bytes change but the memory does not say so: the snapshot is (rightly) reused
    mem.write(CH_BASE[w_ch] + w_off, w2, bump=False)
    sim.run(mem, PROGRAM, {}, CH_BASE)
    np.testing.assert_array_equal(bits(read()), bits(first))
    # the version changes: the next run sees the new weights
    mem.bump(CH_BASE[w_ch] + w_off, w2.nbytes)
    sim.run(mem, PROGRAM, {}, CH_BASE)
    np.testing.assert_array_equal(bits(read()), bits(U.mpe_reference(a, w2, ones, None)))


def test_store_into_loaded_weights_is_seen_by_the_next_load_in_the_same_run():
    mem = Memory()
    rng = np.random.default_rng(22)
    m, n, k = 1, 4, 16
    a = rng.integers(-128, 128, (m, k)).astype(I8)
    w1 = rng.integers(-128, 128, (n, k)).astype(I8)
    w2 = rng.integers(-128, 128, (n, k)).astype(I8)
    ones = np.ones(m, F32)
    p = Prog(mem)
    p.load("abuf", 0, a)
    p.load("abuf", 0x100, ones)
    w_ch, w_off = p.load("wbuf", 0, w1, ch_index=1)
    p.load("gbuf", 0x1000, w2)
    p.insns += [st("gbuf", w_ch, w_off, 0x1000, n, k),              # overwrite w1 in HBM
                ld("wbuf", w_ch, w_off, 0, n, k),                   # same load again
                Instruction("MM", m=m, n=n, k=k, a_scale=0x100, no_wscale=1, out_addr=0)]
    read = p.store("gbuf", 0, (m, n), F16)
    run(mem, {0: p.insns + [END]})
    np.testing.assert_array_equal(bits(read()), bits(U.mpe_reference(a, w2, ones, None)))


def test_partial_writes_over_snapshot_weights_are_seen_by_the_mpe():
    mem = Memory()
    rng = np.random.default_rng(23)
    m, n, k = 1, 4, 16
    a = rng.integers(-128, 128, (m, k)).astype(I8)
    w = rng.integers(-128, 128, (n, k)).astype(I8)
    patch = rng.integers(-128, 128, (1, k)).astype(I8)
    ones = np.ones(m, F32)
    p = Prog(mem)
    p.load("abuf", 0, a)
    p.load("abuf", 0x100, ones)
    p.load("wbuf", 0, w, ch_index=1)                                # snapshot of 4 rows
    p.load("wbuf", 2 * k, patch, ch_index=1, buf_stride=2 * k)      # row 2 by the copy path
    p.insns.append(Instruction("MM", m=m, n=n, k=k, a_scale=0x100, no_wscale=1, out_addr=0))
    read = p.store("gbuf", 0, (m, n), F16)
    raw = p.store("wbuf", 0, (n, k), I8)
    run(mem, {0: p.insns + [END]})
    w[2] = patch[0]
    np.testing.assert_array_equal(raw(), w)
    np.testing.assert_array_equal(bits(read()), bits(U.mpe_reference(a, w, ones, None)))


def test_a_changed_program_is_decoded_again():
    mem = Memory()
    sim = FunctionalSimulator(TARGET)
    _, c1 = run(mem, {0: [END]}, sim=sim)
    _, c2 = run(mem, {0: [ld("gbuf", 0, 0, 0, 1, 8), END]}, sim=sim)
    assert c1.instructions["LD"] == 0 and c2.instructions["LD"] == 1
