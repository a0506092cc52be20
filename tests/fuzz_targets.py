"""Fuzz targets: every file the toolkit reads, with mutators and the only errors each may raise.

Used by `tests/test_fuzz.py` (few cases, derandomised, in the suite) and `benchmarks/fuzz.py`
(>= 10,000 cases per target).  A target builds its good input once (`setup`), makes a bad input
from a random generator (`mutate`) and runs the reader on it (`run`), which returns a summary of
what was read.  `run_case` sorts the outcome:

- ``rejected``: a documented error (a FlightLLMError subclass the reader promises);
- ``accepted``: the input loaded; for targets whose every byte is covered by a digest
  (``exact``), it must then be the good input's summary, else the case is ``wrong``;
- ``raw:<Type>``: any other exception (a bug);
- ``wrong``: accepted with another summary where a digest should have refused it (a bug).
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flightllm_overlay.errors import BitstreamError, CheckpointError, ProgramError

warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture")


@dataclass
class FuzzTarget:
    name: str
    documented: tuple
    setup: Callable[[Path], Any]             # folder -> state (the good input)
    mutate: Callable[[Any, random.Random], Any]
    run: Callable[[Any, Any], Any]           # (state, bad input) -> summary
    exact: bool = False                      # an accepted input must read as the good one


def run_case(target: FuzzTarget, state, rng: random.Random) -> str:
    bad = target.mutate(state, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            got = target.run(state, bad)
        except target.documented:
            return "rejected"
        except Exception as exc:             # noqa: BLE001  the bug this harness looks for
            return f"raw:{type(exc).__name__}: {str(exc)[:120]}"
    if target.exact and got != state["summary"]:
        return "wrong"
    return "accepted"


# ================================================================================================
# mutators
# ================================================================================================
_ODD_VALUES = [0, -1, 1, 2, 3, 7, 255, 2**31, 2**32, 2**63, 10**9, -10**9, 1e9, 0.5, -0.0,
               float("nan"), float("inf"), "", "x", "llama", "0", True, False, None, [], {},
               [1, 2], {"a": 1}, "é", "\udcff", 1e308]


def mutate_bytes(raw: bytes, rng: random.Random, focus: int | None = None) -> bytes:
    """One to three byte-level damages; `focus`: bytes at the start where most land."""
    b = bytearray(raw)

    def pos():
        if focus and rng.random() < 0.7:
            return rng.randrange(min(focus, len(b))) if b else 0
        return rng.randrange(len(b)) if b else 0
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        if not b:
            b += bytes([rng.randrange(256)])
        elif op == 0:
            p = pos()
            b[p] ^= 1 << rng.randrange(8)
        elif op == 1:
            p = pos()
            b[p] = rng.randrange(256)
        elif op == 2:
            del b[rng.randrange(len(b)):]
        elif op == 3:
            p = pos()
            b[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4:
            p = pos()
            del b[p:p + rng.randint(1, 64)]
        elif op == 5:
            p = pos()
            n = rng.choice([1, 2, 4, 8])
            b[p:p + n] = rng.choice([b"\xff" * n, b"\x00" * n, struct.pack("<Q", rng.choice(
                [0, 1, 2**31, 2**32 - 1, 2**62, 10**9]))[:n]])
        else:
            p, q = pos(), rng.randrange(len(b))
            n = rng.randint(1, 32)
            b[p:p + n] = b[q:q + n]
    return bytes(b)


def _nodes(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:64]):
            yield from _nodes(v, path + (i,))


def mutate_json(obj, rng: random.Random, rounds: int | None = None):
    """A deep copy of `obj` with one to three structural changes: a value replaced by an odd one
    or nudged, a key or item removed, an unknown key added, a container emptied."""
    obj = copy.deepcopy(obj)
    for _ in range(rounds or rng.randint(1, 3)):
        nodes = list(_nodes(obj))
        path, node = rng.choice(nodes[1:] or nodes)
        if not path:
            return rng.choice(_ODD_VALUES)
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = rng.randrange(6)
        if op == 0 or op == 5:
            parent[key] = rng.choice(_ODD_VALUES)
        elif op == 1 and isinstance(node, (int, float)) and not isinstance(node, bool):
            parent[key] = node + rng.choice([1, -1, 16, -16, 64, 2**20, -node - 1]) \
                if isinstance(node, int) else node * rng.choice([0, -1, 2, 1e6])
        elif op == 2:
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif op == 3 and isinstance(parent, dict):
            parent[rng.choice(["extra", "n_layers", "rows", "0", "decode@7"])] = \
                rng.choice(_ODD_VALUES)
        elif op == 4 and isinstance(node, (dict, list)):
            parent[key] = type(node)()
        else:
            parent[key] = rng.choice(_ODD_VALUES)
    return obj


# ================================================================================================
# the good inputs, made once per folder
# ================================================================================================
def tiny_checkpoint(folder: Path):
    from flightllm_overlay.model import load_checkpoint
    from flightllm_overlay.model.testing import make_tiny_llama
    path = folder / "tiny-llama"
    if not (path / "config.json").exists():
        make_tiny_llama(path, seed=0)
    return load_checkpoint(path)


def _program_state(folder: Path):
    from flightllm_overlay.compiler import Program, compile_model
    path = folder / "tiny.fllm"
    if not path.exists():
        compile_model(tiny_checkpoint(folder), ctx=64, smooth=False).save(path)
    raw = path.read_bytes()
    return {"raw": raw, "summary": program_summary(Program.load(path)),
            "work": Path(tempfile.mkdtemp(dir=folder))}


def program_summary(p) -> tuple:
    """Everything that decides what a program does."""
    h = hashlib.sha256()
    for name in sorted(p.steps):
        st = p.steps[name]
        h.update(f"{name}|{st.rows}|{st.ctx}|{st.all_logits}".encode())
        h.update(np.ascontiguousarray(st.image).tobytes())
    for ch in sorted(p.channel_static):
        h.update(f"hbm{ch}".encode() + np.ascontiguousarray(p.channel_static[ch]).tobytes())
    h.update(np.ascontiguousarray(p.embedding).tobytes())
    return (h.hexdigest(), json.dumps([p.model, p.target, p.ctx, p.rows,
                                       sorted(p.channel_size.items()),
                                       [vars(x) for x in p.io]], sort_keys=True, default=str))


def _load_program(state, raw: bytes):
    from flightllm_overlay.compiler import Program
    path = state["work"] / "case.fllm"
    path.write_bytes(raw)
    return program_summary(Program.load(path))


def _program_header_mutation(state, rng):
    from program_files import header_of, with_header
    header = header_of(state["raw"])
    return with_header(state["raw"], mutate_json(header, rng))


def _gguf_state(folder: Path, tokenizer: bool = True):
    """A GGUF of the tiny model (without its tokenizer for the byte-level target: the reader's
    time goes into the token list, which `gguf_metadata` fuzzes as data)."""
    import dataclasses

    from flightllm_overlay.model.gguf_loader import metadata, open_gguf
    from flightllm_overlay.model.gguf_writer import write_gguf
    path = folder / ("tiny.gguf" if tokenizer else "tiny-notok.gguf")
    if not path.exists():
        ck = tiny_checkpoint(folder)
        write_gguf(ck if tokenizer else dataclasses.replace(ck, tokenizer=None), path, "F32")
    reader = open_gguf(path)
    rows = next(int(t.shape[-1]) for t in reader.tensors if t.name == "token_embd.weight")
    raw = path.read_bytes()
    return {"meta": metadata(reader), "rows": rows, "raw": raw,
            "header_bytes": int(min(t.data_offset for t in reader.tensors)),
            "work": Path(tempfile.mkdtemp(dir=folder))}


def _gguf_meta_mutation(state, rng):
    meta = state["meta"]
    keys = [k for k in meta if rng.random() < 0.15] or [rng.choice(list(meta))]
    changed = mutate_json({k: meta[k] for k in keys}, rng)
    out = {k: v for k, v in meta.items() if k not in keys}
    if isinstance(changed, dict):
        out.update(changed)
    return out


def _read_gguf_meta(state, meta):
    from flightllm_overlay.model.gguf_loader import args_from_metadata, checked_tokenizer
    args = args_from_metadata(meta, "fuzz", state["rows"], tied=False)
    tok = checked_tokenizer(meta)
    return (args, None if tok is None else tok.vocab_size)


def _load_gguf_file(state, raw):
    from flightllm_overlay.model import load_checkpoint
    path = state["work"] / "case.gguf"
    path.write_bytes(raw)
    ck = load_checkpoint(path)
    return ck.args


def _config_state(folder: Path):
    ck = tiny_checkpoint(folder)
    config = json.loads((Path(ck.source) / "config.json").read_text())
    return {"config": config, "weights": ck.weights}


def _read_config(state, config):
    from flightllm_overlay.model.args import ModelArgs
    from flightllm_overlay.model.checkpoint import check_weights
    args = ModelArgs.from_hf_config(config, name="fuzz")
    check_weights(args, state["weights"])
    return args


def _compressed_state(folder: Path):
    from flightllm_overlay.compress import CompressedModel, CompressionConfig, compress
    path = folder / "tiny.fllmc"
    if not path.exists():
        cfg = CompressionConfig.flightllm().but(avg_bits=5.5, calib_tokens=64)
        compress(tiny_checkpoint(folder), None, cfg, progress=False).save(path)
    cm = CompressedModel.load(path)
    tensors, header = cm.tensors()
    return {"header": json.loads(json.dumps(header)), "tensors": tensors}


def _compressed_mutation(state, rng):
    header = mutate_json(state["header"], rng) if rng.random() < 0.8 else state["header"]
    tensors = dict(state["tensors"])
    if rng.random() < 0.3:
        key = rng.choice(sorted(tensors))
        op = rng.randrange(4)
        if op == 0:
            del tensors[key]
        elif op == 1:
            tensors[key] = tensors[key].reshape(-1)[:-1] if tensors[key].size > 1 else tensors[key]
        elif op == 2:
            t = np.array(tensors[key])
            if t.dtype.kind == "f":
                t.reshape(-1)[rng.randrange(t.size)] = rng.choice([np.nan, np.inf])
            tensors[key] = t
        else:
            tensors[key + "x"] = tensors[key]
    return header, tensors


def _read_compressed(state, case):
    from flightllm_overlay.compress import CompressedModel
    header, tensors = case
    cm = CompressedModel._from(header, tensors, "fuzz.fllmc")
    return cm.args


def _xclbin_state(folder: Path):
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    from flightllm_overlay.sim.xclbin import build_xclbin
    raw = build_xclbin()
    work = Path(tempfile.mkdtemp(dir=folder))
    (work / "good.xclbin").write_bytes(raw)
    device = SimulatedU280()
    state = {"raw": raw, "work": work, "device": device}
    state["summary"] = _overlay_summary(FlightLLMOverlay(str(work / "good.xclbin"), device=device))
    return state


def _overlay_summary(ol) -> str:
    regs = {n: sorted((r, d.get("address_offset"), d.get("memory"), d.get("size"))
                      for r, d in ip["registers"].items()) for n, ip in ol.ip_dict.items()}
    mems = {t: (m.get("base_address"), m.get("size"), bool(m.get("used")))
            for t, m in ol.mem_dict.items()}
    return json.dumps([regs, mems, {n: (ip["phys_addr"], ip["addr_range"], ip["type"])
                                    for n, ip in ol.ip_dict.items()}], sort_keys=True, default=str)


def _load_xclbin(state, raw):
    from flightllm_overlay.overlay import FlightLLMOverlay
    path = state["work"] / "case.xclbin"
    path.write_bytes(raw)
    return _overlay_summary(FlightLLMOverlay(str(path), device=state["device"]))


class UsageError(Exception):
    """argparse refused the arguments with its usage status 2 and an `error:` line."""


def _cli_state(folder: Path):
    from flightllm_overlay.cli import build_parser
    return {"parser": build_parser(), "good": ["generate", "hi", "--temperature", "0.5",
                                                "--ctx", "64"]}


def _cli_mutation(state, rng):
    from test_cli import NASTY, OPTIONS       # the option table and nasty values of the CLI tests
    cmd = rng.choice(sorted(OPTIONS))
    argv = [cmd] + ([rng.choice(NASTY)] if cmd == "disasm" else [])
    for _ in range(rng.randrange(5)):
        value = rng.choice(NASTY) if rng.random() < 0.6 else repr(rng.choice(_ODD_VALUES))
        argv += [rng.choice(OPTIONS[cmd]), value]
    return argv


def _parse_cli(state, argv):
    import contextlib
    import io
    import math
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = state["parser"].parse_args(argv)
        except SystemExit as exc:
            if exc.code == 2 and "error:" in err.getvalue():
                raise UsageError(err.getvalue()) from None
            raise RuntimeError(f"exit {exc.code} without a usage error") from None
    for name, value in vars(args).items():           # what parsing let through is sane
        if isinstance(value, float) and not math.isfinite(value):
            raise RuntimeError(f"--{name} accepted a non-finite {value}")
    return sorted((k, repr(v)) for k, v in vars(args).items() if k != "func")


TARGETS = {
    "program_bytes": FuzzTarget(
        "program_bytes", (ProgramError,), _program_state,
        lambda s, rng: mutate_bytes(s["raw"], rng, focus=struct.unpack("<Q", s["raw"][:8])[0] + 8),
        _load_program, exact=True),
    "program_header": FuzzTarget(
        "program_header", (ProgramError,), _program_state, _program_header_mutation,
        _load_program),
    "gguf_metadata": FuzzTarget(
        "gguf_metadata", (CheckpointError,), _gguf_state, _gguf_meta_mutation, _read_gguf_meta),
    "gguf_bytes": FuzzTarget(
        "gguf_bytes", (CheckpointError,), lambda folder: _gguf_state(folder, tokenizer=False),
        lambda s, rng: mutate_bytes(s["raw"], rng, focus=s["header_bytes"]), _load_gguf_file),
    "config_json": FuzzTarget(
        "config_json", (CheckpointError,), _config_state,
        lambda s, rng: mutate_json(s["config"], rng), _read_config),
    "compressed_metadata": FuzzTarget(
        "compressed_metadata", (CheckpointError,), _compressed_state, _compressed_mutation,
        _read_compressed),
    "xclbin_bytes": FuzzTarget(
        "xclbin_bytes", (BitstreamError,), _xclbin_state,
        lambda s, rng: mutate_bytes(s["raw"], rng, focus=4096), _load_xclbin, exact=True),
    "cli_arguments": FuzzTarget(
        "cli_arguments", (UsageError,), _cli_state, _cli_mutation, _parse_cli),
}


def good_still_works(target: FuzzTarget, state) -> bool:
    """The good input, read after the bad ones, gives its summary (or at least reads)."""
    good = {"program_bytes": lambda: state["raw"], "program_header": lambda: state["raw"],
            "gguf_metadata": lambda: state["meta"], "gguf_bytes": lambda: state["raw"],
            "config_json": lambda: state["config"], "xclbin_bytes": lambda: state["raw"],
            "compressed_metadata": lambda: (state["header"], state["tensors"]),
            "cli_arguments": lambda: state["good"]}[target.name]()
    got = target.run(state, good)
    return got == state["summary"] if "summary" in state else got is not None

