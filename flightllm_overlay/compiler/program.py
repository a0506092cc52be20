"""Compiled programs: step instruction images, HBM channel images, I/O map; a versioned file format.

File layout (little endian): b"FLLMPROG", u32 format version, u32 header length, the JSON header,
then the binary sections back to back.  The header lists every section with its offset, size and
SHA-256, so a truncated or corrupted file is refused with a clear error instead of running.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..spec import isa
from ..errors import ProgramError

MAGIC = b"FLLMPROG"
FORMAT_VERSION = 1


@dataclass
class StepProgram:
    """The instruction image of one step kind (e.g. prefill of up to 128 rows, or decode)."""

    name: str
    rows: int                    # tokens per run, at most
    ctx: int                     # positions the KV cache can hold for this step
    all_logits: bool
    image: np.ndarray            # uint32: isa.pack_image of the per-core streams

    def streams(self) -> list:
        table = isa.image_table(self.image)
        return [self.image[off:off + n] for off, n in table]

    def instruction_counts(self) -> dict:
        counts = {}
        for words in self.streams():
            for insn in isa.decode_stream(words):
                counts[insn.op] = counts.get(insn.op, 0) + 1
        return counts

    def disassemble(self) -> str:
        out = []
        for core, words in enumerate(self.streams()):
            out.append(f"; step {self.name}: core {core}, {len(words)} words")
            out.append(isa.disassemble(words))
        return "\n".join(out)


@dataclass
class CoreIO:
    """Where the host writes one core's input rows and reads its logits."""

    input_channel: int
    input_offset: int
    logits_channel: int
    logits_offset: int
    vocab_start: int
    vocab_stop: int


@dataclass
class Program:
    """Everything needed to run a model on the accelerator."""

    model: dict                  # ModelArgs as a dict
    target: str
    ctx: int
    rows: int                    # the I/O regions' row capacity (largest step)
    steps: dict                  # name -> StepProgram
    channel_static: dict         # channel -> uint8 static image
    channel_size: dict           # channel -> bytes to allocate (static + mutable)
    io: list                     # [CoreIO] per core
    embedding: np.ndarray        # f16 (vocab, dim), gathered by the host
    meta: dict = field(default_factory=dict)
    builder: object = field(default=None, repr=False, compare=False)  # compiles more steps (BucketTable)

    @property
    def dim(self) -> int:
        return int(self.model["dim"])

    @property
    def vocab_size(self) -> int:
        return int(self.model["vocab_size"])

    def step(self, name: str) -> StepProgram:
        try:
            return self.steps[name]
        except KeyError:
            raise ProgramError(f"program has no step {name!r}; it has {sorted(self.steps)}") from None

    @property
    def weight_bytes(self) -> int:
        return sum(int(v.size) for v in self.channel_static.values())

    # -- file format --------------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
        sections, blobs, offset = [], [], 0

        def add(name, array):
            nonlocal offset
            raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1).tobytes()
            sections.append({"name": name, "offset": offset, "size": len(raw),
                             "dtype": str(np.asarray(array).dtype),
                             "shape": list(np.asarray(array).shape),
                             "sha256": hashlib.sha256(raw).hexdigest()})
            blobs.append(raw)
            offset += len(raw)

        for name, st in self.steps.items():
            add(f"step/{name}", st.image)
        for ch, img in sorted(self.channel_static.items()):
            add(f"hbm/{ch}", img)
        add("embedding", self.embedding)
        header = {
            "format_version": FORMAT_VERSION, "isa_version": isa.IMAGE_VERSION,
            "model": self.model, "target": self.target, "ctx": self.ctx, "rows": self.rows,
            "steps": {n: {"rows": s.rows, "ctx": s.ctx, "all_logits": s.all_logits}
                      for n, s in self.steps.items()},
            "channel_size": {str(k): v for k, v in self.channel_size.items()},
            "io": [asdict(x) for x in self.io], "meta": self.meta, "sections": sections,
        }
        head = json.dumps(header, sort_keys=True).encode()
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + struct.pack("<II", FORMAT_VERSION, len(head)) + head)
            for b in blobs:
                fh.write(b)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "Program":
        path = Path(path)
        if not path.is_file():
            raise ProgramError(f"no program file at {path}; create one with `flightllm compile`")
        data = path.read_bytes()
        if data[:8] != MAGIC:
            raise ProgramError(f"{path} is not a FlightLLM program file (bad magic); "
                               f"create one with `flightllm compile`")
        version, hlen = struct.unpack("<II", data[8:16])
        if version != FORMAT_VERSION:
            raise ProgramError(f"{path} has program format {version}; this version reads "
                               f"{FORMAT_VERSION}: recompile it")
        try:
            header = json.loads(data[16:16 + hlen])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProgramError(f"{path}: header is corrupt ({exc}); recompile") from exc
        base = 16 + hlen
        arrays = {}
        for sec in header["sections"]:
            raw = data[base + sec["offset"]: base + sec["offset"] + sec["size"]]
            if len(raw) != sec["size"] or hashlib.sha256(raw).hexdigest() != sec["sha256"]:
                raise ProgramError(f"{path}: section {sec['name']} is truncated or corrupt "
                                   f"(checksum mismatch); recompile the program")
            arrays[sec["name"]] = np.frombuffer(raw, dtype=sec["dtype"]).reshape(sec["shape"]).copy()
        steps = {n: StepProgram(n, s["rows"], s["ctx"], s["all_logits"], arrays[f"step/{n}"])
                 for n, s in header["steps"].items()}
        static = {int(k.split("/")[1]): v for k, v in arrays.items() if k.startswith("hbm/")}
        return cls(model=header["model"], target=header["target"], ctx=header["ctx"],
                   rows=header["rows"], steps=steps, channel_static=static,
                   channel_size={int(k): v for k, v in header["channel_size"].items()},
                   io=[CoreIO(**x) for x in header["io"]], embedding=arrays["embedding"],
                   meta=header.get("meta", {}))

    def disassemble(self) -> str:
        return "\n".join(st.disassemble() for st in self.steps.values())
