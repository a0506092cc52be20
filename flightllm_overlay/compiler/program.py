"""Compiled programs: step instruction images, HBM channel images, I/O map (file format: program_file.py).

A saved program is a safetensors file with a checked JSON header; see `program_file` for the
layout and for what is validated before a loaded program is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..spec import isa
from ..errors import ProgramError
from .program_file import FORMAT_VERSION  # noqa: F401  (the version of saved programs)



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
    recipe: object = field(default=None, repr=False, compare=False)   # re-runs the placement (recipe.py)
    cache_entry: object = field(default=None, repr=False, compare=False)  # its file, when from the cache

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

    # -- file format (compiler/program_file.py) -----------------------------------------------------
    def save(self, path) -> Path:
        """Write the program (every step and bucket stream compiled so far, the HBM images, the
        embedding and the placement recipe, from which a loaded program compiles the buckets it
        lacks) to a program file, atomically; returns the path."""
        if self.meta.get("shape_only"):
            raise ProgramError("this program was compiled from shapes alone (no weights) and "
                               "cannot be saved; compile a checkpoint")
        if self.recipe is None:
            raise ProgramError("this program has no placement recipe (it was not made by "
                               "compile_model, compile_compressed or Program.load), so a loaded "
                               "copy could not compile its buckets; compile the model to save it")
        from .program_file import write
        return write(self, path)

    @classmethod
    def load(cls, path, verify: bool = True) -> "Program":
        """A program file, checked end to end (structure, header digest and schema, tensor
        digests unless `verify` is False); its arrays are read-only memory maps.  It compiles
        the buckets it lacks as the program did when it was saved (`buckets.builder_of`)."""
        from .program_file import read
        from .recipe import PlacementRecipe
        got = read(path, verify)
        h, arrays = got["header"], got["arrays"]
        steps = {n: StepProgram(n, s["rows"], s["ctx"], s["all_logits"], arrays[s["image"]])
                 for n, s in h["steps"].items()}
        static = {int(k[4:]): v for k, v in arrays.items() if k.startswith("hbm/")}
        return cls(model=h["model"], target=h["target"], ctx=h["ctx"], rows=h["rows"],
                   steps=steps, channel_static=static,
                   channel_size={int(k): v for k, v in h["channel_size"].items()},
                   io=[CoreIO(**x) for x in h["io"]], embedding=arrays["embedding"],
                   meta=h["meta"], recipe=PlacementRecipe.from_file(h["placement"], arrays))

    def disassemble(self) -> str:
        return "\n".join(st.disassemble() for st in self.steps.values())
