"""The program file: a safetensors file whose JSON metadata is checked against a schema before use.

Layout (format 3).  A program file is a plain safetensors file (the format Hugging Face maintains:
an 8-byte header length, a JSON table of tensors, the tensor bytes), so any safetensors reader
opens it.  Its tensors:

- ``stream/<digest>``: uint32 instruction images (``isa.pack_image``), one per distinct image; the
  steps and buckets that share an image share the tensor;
- ``hbm/<channel>``: uint8 static HBM image of a channel (weights, tables), one per channel,
  shared by every step and bucket;
- ``embedding``: float16 (vocab_size, dim), gathered by the host;
- ``codes/<layer>/<weight>``: uint8 N:16 codes of a sparse weight, flattened (recipe.py).

Its ``__metadata__`` holds one key, ``flightllm``, a JSON header: format and ISA versions, the
model's shape and identity, target, context, steps (rows, ctx, all_logits, image), channel sizes,
per-core I/O map, free-form ``meta``, the SHA-256 of every tensor, and ``placement``: the recipe
that re-runs the placement (weight formats, slots, schedule options, fusion, attention pattern),
from which a loaded program compiles the buckets it lacks exactly as the compiler would have;
and ``flightllm.sha256``, the digest of that header text.  Files of an older format are refused
with "recompile it".  `read` checks, in this order and before allocating anything
large: the file size and safetensors structure; the header digest; the header against the schema
(types, ranges, limits, consistency with the target and between fields); the tensor table against
the header (names, dtypes, shapes); then each tensor's digest.  Tensors are memory-mapped
read-only: nothing is copied until the session writes the weights into device buffers.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..spec import isa
from ..errors import FlightLLMError, ProgramError
from .recipe import check_section, code_tensors

FORMAT = "flightllm-program"
FORMAT_VERSION = 3                # 3: the placement recipe (compiler/recipe.py)

# -- limits on every size (far above any model this toolkit compiles for the U280) ---------------
MAX_HEADER_BYTES = 16 << 20       # the safetensors JSON table and our metadata
MAX_TENSORS = 4096
MAX_STEPS = 2048
MAX_VOCAB = 1 << 20
MAX_DIM = 1 << 16
MAX_LAYERS = 1024
MAX_IMAGE_WORDS = 1 << 28         # 1 GiB of instructions
MAX_META_BYTES = 1 << 20

_STEP_NAME = re.compile(r"^(prefill|decode)(@[1-9][0-9]{0,6}|#exact[1-9][0-9]{0,6})?$")
_DTYPES = {"U32": np.uint32, "U8": np.uint8, "F16": np.float16}


def _fail(path, what: str) -> ProgramError:
    return ProgramError(f"{path}: {what}; the program file is corrupt or was not written by this "
                        f"toolkit: recompile it (`flightllm compile`)")


# ================================================================================================
# writing
# ================================================================================================
def write(program, path) -> Path:
    """Write `program` to `path` atomically: a unique temporary file in the same folder, renamed
    into place; the temporary file is removed if anything fails."""
    from safetensors.numpy import save_file
    path = Path(path)
    tensors, digests, step_table = {}, {}, {}

    def add(name, array):
        array = np.ascontiguousarray(array)
        tensors[name] = array
        digests[name] = hashlib.sha256(memoryview(array).cast("B")).hexdigest()

    images = {}
    for name, st in program.steps.items():
        image = np.ascontiguousarray(st.image, dtype=np.uint32)
        key = "stream/" + hashlib.sha256(memoryview(image).cast("B")).hexdigest()[:32]
        if key not in images:
            images[key] = image
            add(key, image)
        step_table[name] = {"rows": int(st.rows), "ctx": int(st.ctx),
                            "all_logits": bool(st.all_logits), "image": key}
    for ch, img in sorted(program.channel_static.items()):
        add(f"hbm/{int(ch)}", np.asarray(img, dtype=np.uint8).reshape(-1))
    add("embedding", np.asarray(program.embedding, dtype=np.float16))
    for name, codes in program.recipe.tensors().items():
        add(name, codes)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "isa_version": isa.IMAGE_VERSION,
        "model": dict(program.model), "target": program.target, "ctx": int(program.ctx),
        "rows": int(program.rows), "steps": step_table,
        "channel_size": {str(int(k)): int(v) for k, v in sorted(program.channel_size.items())},
        "io": [{k: int(v) for k, v in vars(x).items()} for x in program.io],
        "meta": _jsonable(program.meta), "tensors": digests,
        "placement": program.recipe.header(),
    }
    text = json.dumps(header, sort_keys=True, allow_nan=False)
    metadata = {"flightllm": text, "flightllm.sha256": hashlib.sha256(text.encode()).hexdigest()}
    if path.is_dir():
        raise ProgramError(f"{path} is a folder: give a file name, e.g. {path / 'model.fllm'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ProgramError(f"cannot write the program to {path}: {exc.strerror or exc}; choose "
                           f"a writable location") from None
    try:
        os.close(fd)
        save_file(tensors, tmp, metadata=metadata)    # no fsync: a torn file fails its digests
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ProgramError(f"cannot write the program to {path}: {exc.strerror or exc}; "
                               f"choose a writable location with enough space") from exc
        raise
    return path


def _jsonable(meta: dict) -> dict:
    """`meta` as plain JSON (tuples to lists), refusing what JSON cannot hold."""
    try:
        return json.loads(json.dumps(meta, allow_nan=False, default=_no_json))
    except (TypeError, ValueError) as exc:
        raise ProgramError(f"program meta cannot be saved: {exc}") from None


def _no_json(obj):
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON")


# ================================================================================================
# reading
# ================================================================================================
def read(path, verify: bool = True) -> dict:
    """The checked contents of a program file: {"header": dict, "arrays": {name: read-only array}}.

    `verify=False` skips the per-tensor SHA-256 (the structure and schema are always checked)."""
    path = Path(path)
    if not path.is_file():
        raise ProgramError(f"no program file at {path}; create one with `flightllm compile`")
    try:
        size = path.stat().st_size
        fh = open(path, "rb")
    except OSError as exc:
        raise ProgramError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        head = fh.read(8)
        if head == b"FLLMPROG":
            raise ProgramError(f"{path} is a program file of format 1 (an older version of this "
                               f"toolkit); this version reads format {FORMAT_VERSION}: recompile it")
        if len(head) < 8:
            raise ProgramError(f"{path} is not a FlightLLM program file ({size} bytes); "
                               f"create one with `flightllm compile`")
        (hlen,) = struct.unpack("<Q", head)
        if not 2 <= hlen <= min(MAX_HEADER_BYTES, size - 8):
            raise ProgramError(f"{path} is not a FlightLLM program file (its header length {hlen} "
                               f"does not fit a {size}-byte file); create one with "
                               f"`flightllm compile`")
        raw = fh.read(hlen)
    try:
        table = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProgramError(f"{path} is not a FlightLLM program file (its header is not JSON); "
                           f"create one with `flightllm compile`") from None
    if not isinstance(table, dict) or not isinstance(table.get("__metadata__"), dict) or \
            "flightllm" not in table["__metadata__"]:
        raise ProgramError(f"{path} is not a FlightLLM program file (a safetensors file without "
                           f"FlightLLM metadata?); create one with `flightllm compile`")
    _check_safetensors(path)
    meta = table.pop("__metadata__")
    text = meta.get("flightllm")
    if not isinstance(text, str) or hashlib.sha256(text.encode()).hexdigest() != \
            meta.get("flightllm.sha256"):
        raise _fail(path, "its header does not match its SHA-256")
    try:
        header = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"its header is not valid JSON ({exc})") from None
    check_header(header, path)
    _check_tensor_table(header, table, hlen, size, path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    arrays = {}
    for name, entry in table.items():
        start, stop = entry["data_offsets"]
        view = data[8 + hlen + start: 8 + hlen + stop]
        if verify and hashlib.sha256(view).hexdigest() != header["tensors"][name]:
            raise ProgramError(f"{path}: tensor {name} is truncated or corrupt (checksum "
                               f"mismatch); recompile the program")
        arrays[name] = view.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])
    for name, step in header["steps"].items():
        _check_image(arrays[step["image"]], header, name, path)
    return {"header": header, "arrays": arrays}


def _reject_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _check_safetensors(path) -> None:
    """The safetensors library's own structural checks (offsets, dtypes, sizes, overlaps)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="np") as f:
            f.metadata()
    except Exception as exc:      # SafetensorError and friends: the file's structure is wrong
        raise _fail(path, f"safetensors rejects it ({str(exc)[:200]})") from None


# ================================================================================================
# the schema
# ================================================================================================
class _Check:
    """Typed field readers that raise ProgramError naming the field."""

    def __init__(self, path):
        self.path = path

    def fail(self, what):
        return _fail(self.path, what)

    def obj(self, d, key, where):
        v = d.get(key) if isinstance(d, dict) else None
        if not isinstance(v, dict):
            raise self.fail(f"{where}{key} must be an object")
        return v

    def int(self, d, key, lo, hi, where=""):
        v = d.get(key) if isinstance(d, dict) else None
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise self.fail(f"{where}{key} = {v!r:.40} must be an integer in {lo}..{hi}")
        return v

    def bool(self, d, key, where=""):
        v = d.get(key) if isinstance(d, dict) else None
        if not isinstance(v, bool):
            raise self.fail(f"{where}{key} = {v!r:.40} must be true or false")
        return v

    def str(self, d, key, where="", pattern=None, maxlen=256):
        v = d.get(key) if isinstance(d, dict) else None
        if not isinstance(v, str) or len(v) > maxlen or (pattern and not re.match(pattern, v)):
            raise self.fail(f"{where}{key} = {v!r:.40} must be a string"
                            + (f" matching {pattern}" if pattern else ""))
        return v


def check_header(h, path="program") -> None:
    """Raise ProgramError unless `h` is a complete, consistent program header."""
    c = _Check(path)
    if not isinstance(h, dict):
        raise c.fail("its header is not an object")
    if h.get("format") != FORMAT:
        raise c.fail(f"format is {h.get('format')!r:.40}, not {FORMAT!r}")
    version = h.get("format_version")
    if version != FORMAT_VERSION:
        raise ProgramError(f"{path} has program format {version!r:.20}; this version reads "
                           f"{FORMAT_VERSION}: recompile it")
    if h.get("isa_version") != isa.IMAGE_VERSION:
        raise ProgramError(f"{path} holds ISA version {h.get('isa_version')!r:.20}; this version "
                           f"runs {isa.IMAGE_VERSION}: recompile it")
    target = _target(c.str(h, "target", pattern=r"^[A-Za-z0-9_.-]{1,64}$"), path)
    model = check_model(c.obj(h, "model", ""), path)
    ctx = c.int(h, "ctx", 1, target.max_length)
    rows = c.int(h, "rows", 1, target.prefill_bucket)
    dim, vocab = model["dim"], model["vocab_size"]
    # channels: which ones, their sizes
    sizes = c.obj(h, "channel_size", "")
    if len(sizes) > target.hbm_channels:
        raise c.fail(f"channel_size lists {len(sizes)} channels; the target has {target.hbm_channels}")
    channel_size = {}
    for k in sizes:
        if not re.fullmatch(r"[0-9]{1,3}", k) or int(k) >= target.hbm_channels:
            raise c.fail(f"channel_size names channel {k!r:.20}; channels are 0..{target.hbm_channels - 1}")
        channel_size[int(k)] = c.int(sizes, k, 1, target.hbm_channel_bytes, "channel_size.")
    # steps
    steps = c.obj(h, "steps", "")
    if not 1 <= len(steps) <= MAX_STEPS or not {"prefill", "decode"} <= set(steps):
        raise c.fail(f"it must have steps 'prefill' and 'decode' (and at most {MAX_STEPS} steps)")
    tensors = c.obj(h, "tensors", "")
    for name, st in steps.items():
        if not isinstance(name, str) or not _STEP_NAME.match(name):
            raise c.fail(f"step name {name!r:.40} is not prefill/decode[@N|#exactN]")
        where = f"steps.{name}."
        if not isinstance(st, dict):
            raise c.fail(f"steps.{name} must be an object")
        srows = c.int(st, "rows", 1, rows, where)
        sctx = c.int(st, "ctx", 1, ctx, where)
        all_logits = c.bool(st, "all_logits", where)
        if name.startswith("decode") and (srows != 1 or all_logits):
            raise c.fail(f"{where}: a decode step runs one row and returns its logits only")
        tail = name.partition("@")[2] or name.partition("#exact")[2]
        if tail and int(tail) != sctx:
            raise c.fail(f"{where}ctx = {sctx} but the step's name says {tail}")
        if not tail and sctx != ctx:
            raise c.fail(f"{where}ctx = {sctx}: the whole-context step must have ctx = {ctx}")
        if c.str(st, "image", where, r"^stream/[0-9a-f]{32}$") not in tensors:
            raise c.fail(f"{where}image names a tensor the file does not list")
    # per-core I/O: inside the channels, clear of the static image, covering the vocabulary once
    io = h.get("io")
    if not isinstance(io, list) or len(io) != target.cores:
        raise c.fail(f"io must list one entry per core ({target.cores})")
    max_rows = max(s["rows"] if s["all_logits"] else 1 for s in steps.values())
    spans = []
    for i, x in enumerate(io):
        where = f"io[{i}]."
        if not isinstance(x, dict) or set(x) != {"input_channel", "input_offset", "logits_channel",
                                                 "logits_offset", "vocab_start", "vocab_stop"}:
            raise c.fail(f"io[{i}] must hold exactly the six I/O fields")
        start = c.int(x, "vocab_start", 0, vocab, where)
        stop = c.int(x, "vocab_stop", start + 1, vocab, where)
        spans.append((start, stop))
        for kind, nbytes in (("input", rows * dim * 2), ("logits", max_rows * (stop - start) * 2)):
            ch = c.int(x, f"{kind}_channel", 0, target.hbm_channels - 1, where)
            if ch not in channel_size or ch not in target.core_channels[i]:
                raise c.fail(f"{where}{kind}_channel {ch} is not a channel of core {i} in "
                             f"channel_size")
            off = c.int(x, f"{kind}_offset", 0, channel_size[ch], where)
            if off + nbytes > channel_size[ch]:
                raise c.fail(f"{where}the {kind} region ({nbytes} bytes at {off}) overruns "
                             f"channel {ch} ({channel_size[ch]} bytes)")
    if sorted(spans)[0][0] != 0 or any(a[1] != b[0] for a, b in zip(sorted(spans), sorted(spans)[1:])) \
            or sorted(spans)[-1][1] != vocab:
        raise c.fail(f"the cores' vocabulary ranges {sorted(spans)} must cover 0..{vocab} exactly once")
    meta = h.get("meta")
    if not isinstance(meta, dict) or len(json.dumps(meta)) > MAX_META_BYTES:
        raise c.fail(f"meta must be an object of at most {MAX_META_BYTES} bytes")
    identity = meta.get("identity")
    if identity is not None:
        if not isinstance(identity, dict):
            raise c.fail("meta.identity must be an object")
        c.str(identity, "name", "meta.identity.")
        for key in ("tokenizer", "weights"):
            if identity.get(key) is not None:
                c.str(identity, key, "meta.identity.", r"^[0-9a-f]{64}$")
    for name, digest in tensors.items():
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise c.fail(f"tensors.{name!s:.40} must be a SHA-256 hex digest")
    if len(tensors) > MAX_TENSORS:
        raise c.fail(f"it lists {len(tensors)} tensors; at most {MAX_TENSORS}")
    check_section(c, h)


def check_model(m: dict, path="program") -> dict:
    """The model shape of a program header, checked by ModelArgs' own validation."""
    from ..model.args import ModelArgs
    from ..errors import CheckpointError
    c = _Check(path)
    allowed = {"name", "arch", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
               "hidden_dim", "vocab_size", "norm_eps", "rope_theta", "max_seq_len",
               "tie_embeddings"}
    if set(m) - allowed:
        raise c.fail(f"model has unknown fields {sorted(set(m) - allowed)[:4]}")
    c.int(m, "dim", 1, MAX_DIM, "model.")
    c.int(m, "vocab_size", 1, MAX_VOCAB, "model.")
    c.int(m, "n_layers", 1, MAX_LAYERS, "model.")
    try:
        ModelArgs(**m)
    except (CheckpointError, TypeError, ValueError) as exc:
        raise c.fail(f"its model shape is invalid ({exc})") from None
    return m


def _target(name, path):
    from ..config import load_target
    try:
        return load_target(name)
    except FlightLLMError as exc:
        raise ProgramError(f"{path} was compiled for target {name!r}, which this installation "
                           f"does not know ({exc})") from None


def _check_tensor_table(h, table, hlen, size, path) -> None:
    """The safetensors tensor table holds exactly the tensors the header names, with the dtypes
    and shapes the header implies."""
    c = _Check(path)
    digests = h["tensors"]
    if set(table) != set(digests):
        raise c.fail(f"its tensors {sorted(table)[:3]}... do not match the header's list")
    model = h["model"]
    want = {"embedding": ("F16", [model["vocab_size"], model["dim"]])}
    for k in h["channel_size"]:
        if f"hbm/{k}" in table:
            want[f"hbm/{k}"] = ("U8", None)
    images = {st["image"] for st in h["steps"].values()}
    for name in images:
        want[name] = ("U32", None)
    for name in code_tensors(h["placement"]):
        want[name] = ("U8", None)
    if set(want) != set(table):
        extra = sorted(set(table) - set(want))[:3]
        raise c.fail(f"it holds tensors the header gives no use for ({extra}) or lacks one")
    end = size - 8 - hlen
    for name, (dtype, shape) in want.items():
        entry = table[name]
        if not isinstance(entry, dict) or entry.get("dtype") != dtype:
            raise c.fail(f"tensor {name} must be {dtype}")
        shp, offs = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shp, list) and all(isinstance(n, int) and n >= 0 for n in shp)
                and isinstance(offs, list) and len(offs) == 2
                and all(isinstance(n, int) for n in offs) and 0 <= offs[0] <= offs[1] <= end):
            raise c.fail(f"tensor {name} has a malformed entry")
        if shape is not None and shp != shape:
            raise c.fail(f"tensor {name} has shape {shp}; the model implies {shape}")
        if shape is None and len(shp) != 1:
            raise c.fail(f"tensor {name} must be one-dimensional")
        if math.prod(shp) * np.dtype(_DTYPES[dtype]).itemsize != offs[1] - offs[0]:
            raise c.fail(f"tensor {name}'s shape does not match its byte range")
        if name.startswith("hbm/") and shp[0] > h["channel_size"][name[4:]]:
            raise c.fail(f"the static image of channel {name[4:]} ({shp[0]} bytes) is larger "
                         f"than the channel ({h['channel_size'][name[4:]]} bytes)")
        if name.startswith("stream/") and not 4 <= shp[0] <= MAX_IMAGE_WORDS:
            raise c.fail(f"instruction image {name} has {shp[0]} words")
    for i, x in enumerate(h["io"]):        # the host's writes never reach the static image
        for kind in ("input", "logits"):
            ch = str(x[f"{kind}_channel"])
            static = table[f"hbm/{ch}"]["shape"][0] if f"hbm/{ch}" in table else 0
            if x[f"{kind}_offset"] < static:
                raise c.fail(f"io[{i}].{kind}_offset {x[f'{kind}_offset']} lies inside the static "
                             f"image of channel {ch} ({static} bytes)")


def _check_image(image, h, step, path) -> None:
    """An instruction image's own header: right core count, table inside the image."""
    from ..config import load_target
    cores = load_target(h["target"]).cores
    try:
        table = isa.image_table(image[:isa.IMAGE_HEADER_WORDS + 2 * cores])
    except FlightLLMError as exc:
        raise _fail(path, f"step {step}: {exc}") from None
    if len(table) != cores or int(image[3]) != image.size:
        raise _fail(path, f"step {step}: its instruction image is for {len(table)} cores and "
                          f"{int(image[3])} words; the target has {cores} cores, the image "
                          f"{image.size} words")
