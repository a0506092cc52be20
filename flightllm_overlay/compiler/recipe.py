"""The placement recipe a program file keeps, so that a loaded program re-runs its placement and compiles any bucket as compiled.

The placement (compiler/placement.py) is a function of the model's shape, the target, the
context, the rows per step, and of what this recipe holds: each weight matrix's device format
(raw INT8 rows, or packed with its bits, group and N:16 codes), the weight-buffer slots, the
schedule options, whether the step is fused, and the prefill attention pattern.  The weights'
values never move a tile, so the placement is re-run on a shape-only model
(`quantize.ShapeWeight`) in the recorded formats; `buckets.builder_of` does that and checks the
result against the file.

In a program header the recipe is the ``placement`` object; sparse weights' N:16 codes are
uint8 tensors ``codes/<layer>/<weight>`` (``codes/lm_head``), flattened.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from ..errors import CompileError, ProgramError
from ..spec import isa
from ..spec import wformat as WF
from .schedule import NAMES, ScheduleOptions

#: a weight's format in a program header: "int8" (rows then FP32 scales), or "packed/8",
#: "packed/<bits>/<group>" (spec/wformat.py), either packed one with "/sparse" (N:16 codes),
#: or "packed/<bits>/<group>/exact" (codes on the MPE's exact group arithmetic, ISA `wcodes`)
_LOW = r"(%s)/(%s)" % ("|".join(str(b) for b in WF.BITS if b < 8), "|".join(map(str, WF.GROUPS)))
FORMAT_PATTERN = r"^(int8|packed/(8|%s)(/sparse)?|packed/%s/exact)$" % (_LOW, _LOW)
_WEIGHT_NAME = r"^[a-z][a-z0-9_]{0,31}$"
MAX_WEIGHTS_PER_LAYER = 32
MAX_SLOTS = 1024
MAX_BLOCKS = 63                  # blk_sink and blk_win are 6-bit ISA fields
KEYS = {"weight_slots", "schedule", "fused", "weights", "lm_head", "attn_pattern"}
OPTIONAL_KEYS = {"wide_points",     # absent in files written before two-plane activations
                 "act_group"}       # and before activation scales per group of channels
#: the points a program may run wide (compress.config.WIDE_POINTS, the same tuple)
WIDE_POINTS = ("attn_in", "q", "k", "attn_out", "ffn_in", "ffn_mid", "head_in")


@dataclass
class WeightFormat:
    """How one weight matrix lies in HBM; with its shape, it fixes the matrix's tiles."""

    bits: int = 8
    group: int = 0                    # columns per (M, B) pair, below 8 bits
    packed: bool = False              # the packed format, not raw INT8 rows + FP32 scales
    codes: np.ndarray | None = None   # N:16 codes of a sparse weight (flat in a file)
    exact: bool = False               # codes on the MPE's exact group arithmetic (`wcodes`)

    @classmethod
    def of(cls, q) -> "WeightFormat":
        """The format of a weight as placed: an INT8 array, a PackedWeight or a ShapeWeight."""
        if isinstance(q, np.ndarray):
            return cls()
        return cls(q.bits, q.group if q.bits < 8 else 0, getattr(q, "packed", True), q.block_n,
                   bool(getattr(q, "exact", False)))

    @property
    def text(self) -> str:
        if not self.packed:
            return "int8"
        bits = "8" if self.bits == 8 else f"{self.bits}/{self.group}"
        return f"packed/{bits}" + ("/sparse" if self.codes is not None else "") + \
            ("/exact" if self.exact else "")

    @classmethod
    def parse(cls, text: str, codes=None) -> "WeightFormat":
        """From `text` (checked against FORMAT_PATTERN) and, if sparse, its codes tensor."""
        if text == "int8":
            return cls()
        parts = text.split("/")
        bits = int(parts[1])
        return cls(bits, int(parts[2]) if bits < 8 else 0, True, codes, parts[-1] == "exact")

    def shape_weight(self, rows: int, k: int, where: str):
        """A ShapeWeight of this format and shape (its codes checked against the shape)."""
        from .quantize import ShapeWeight
        codes = self.codes
        if codes is not None:
            if rows % WF.BLOCK or k % WF.BLOCK or codes.size != (rows // WF.BLOCK) * (k // WF.BLOCK):
                raise ProgramError(f"the N:16 codes of {where} ({codes.size}) do not fit its "
                                   f"{rows} x {k} shape; recompile the program")
            codes = np.asarray(codes, np.uint8).reshape(rows // WF.BLOCK, k // WF.BLOCK)
            try:
                WF.check_codes(codes)
            except CompileError as exc:
                raise ProgramError(f"{where}: {exc}; recompile the program") from None
        return ShapeWeight(rows, k, self.bits, group=self.group or 32, block_n=codes,
                           packed8=self.packed and self.bits == 8, exact=self.exact)


def code_tensor(layer, name: str) -> str:
    return "codes/lm_head" if layer is None else f"codes/{layer}/{name}"


@dataclass
class PlacementRecipe:
    """What re-runs a program's placement besides the model shape, target, context and rows."""

    weight_slots: int
    schedule: ScheduleOptions
    fused: bool
    layers: list                      # per layer: {weight name: WeightFormat}
    lm_head: WeightFormat
    attn_pattern: list | None = None  # per layer, per query head: (sink, window) in blocks
    wide_points: tuple = ()           # points (q, k, linear inputs) run as two INT8 planes
    act_group: int = 0                # channels per activation scale at the linears' inputs

    @classmethod
    def of(cls, qm, weight_slots: int, schedule: ScheduleOptions, fused: bool):
        """The recipe of placing `qm` (a QuantizedModel) with these options."""
        layers = [{k: WeightFormat.of(v[0]) for k, v in layer.items() if isinstance(v, tuple)}
                  for layer in qm.layers]
        pattern = [[(int(s), int(w)) for s, w in heads] for heads in qm.attn_pattern] \
            if qm.attn_pattern else None
        return cls(int(weight_slots), schedule, bool(fused), layers,
                   WeightFormat.of(qm.lm_head[0]), pattern, tuple(qm.wide_points),
                   int(getattr(qm, "act_group", 0)))

    def _formats(self):
        for i, layer in enumerate(self.layers):
            for name, fmt in layer.items():
                yield code_tensor(i, name), fmt
        yield code_tensor(None, "lm_head"), self.lm_head

    # -- the program file -----------------------------------------------------------------------
    def header(self) -> dict:
        return {"weight_slots": self.weight_slots, "schedule": self.schedule.as_dict(),
                "fused": self.fused, "lm_head": self.lm_head.text,
                "weights": [{k: f.text for k, f in layer.items()} for layer in self.layers],
                "attn_pattern": None if self.attn_pattern is None else
                [[list(p) for p in heads] for heads in self.attn_pattern],
                "wide_points": list(self.wide_points),
                **({"act_group": self.act_group} if self.act_group else {})}

    def tensors(self) -> dict:
        """{tensor name: flat uint8 codes} of the sparse weights."""
        return {name: np.asarray(f.codes, np.uint8).reshape(-1)
                for name, f in self._formats() if f.codes is not None}

    @classmethod
    def from_file(cls, section: dict, arrays: dict) -> "PlacementRecipe":
        """From a checked header section (`check_section`) and the file's tensors."""
        def fmt(text, name):
            return WeightFormat.parse(text, arrays[name] if text.endswith("/sparse") else None)
        layers = [{k: fmt(t, code_tensor(i, k)) for k, t in layer.items()}
                  for i, layer in enumerate(section["weights"])]
        pattern = section["attn_pattern"]
        return cls(section["weight_slots"], ScheduleOptions(**section["schedule"]),
                   section["fused"], layers, fmt(section["lm_head"], code_tensor(None, "lm_head")),
                   None if pattern is None else [[tuple(p) for p in heads] for heads in pattern],
                   tuple(section.get("wide_points", ())), section.get("act_group", 0))

    def model(self, base):
        """`base`, the family's shape-only model of the program's shape, with each weight in
        its recorded format and the recorded attention pattern: what the placement re-runs on."""
        if len(self.layers) != len(base.layers):
            raise ProgramError(f"the placement recipe lists {len(self.layers)} layers; the model "
                               f"has {len(base.layers)}; recompile the program")
        layers = []
        for i, (formats, layer) in enumerate(zip(self.layers, base.layers)):
            names = sorted(k for k, v in layer.items() if isinstance(v, tuple))
            if sorted(formats) != names:
                raise ProgramError(f"the placement recipe names the weights {sorted(formats)} in "
                                   f"layer {i}; this model family's layers have {names}; "
                                   f"recompile the program")
            layer = dict(layer)
            for k, f in formats.items():
                w = f.shape_weight(*layer[k][0].shape, where=f"layer {i} {k}")
                layer[k] = (w, w)
            layers.append(layer)
        head = self.lm_head.shape_weight(*base.lm_head[0].shape, where="lm_head")
        return dataclasses.replace(base, layers=layers, lm_head=(head, head),
                                   attn_pattern=self.attn_pattern, wide_points=self.wide_points,
                                   act_group=self.act_group)


def check_section(c, h: dict) -> None:
    """Check the header's ``placement`` section with program_file's field checker `c`."""
    model, where = h["model"], "placement."
    p = c.obj(h, "placement", "")
    if not KEYS <= set(p) <= KEYS | OPTIONAL_KEYS:
        raise c.fail(f"placement must hold exactly {sorted(KEYS)} (and optionally "
                     f"{sorted(OPTIONAL_KEYS)})")
    wide = p.get("wide_points", [])
    if not (isinstance(wide, list) and all(isinstance(w, str) and w in WIDE_POINTS for w in wide)
            and len(set(wide)) == len(wide)):
        raise c.fail(f"placement.wide_points must list distinct names of {list(WIDE_POINTS)}")
    group = p.get("act_group", 0)
    if not (type(group) is int and group in isa.ACT_GROUPS):
        raise c.fail(f"placement.act_group must be one of {list(isa.ACT_GROUPS)} (channels per "
                     f"activation scale; 0: one per row)")
    c.int(p, "weight_slots", 2, MAX_SLOTS, where)
    c.bool(p, "fused", where)
    schedule = c.obj(p, "schedule", where)
    if set(schedule) != set(NAMES):
        raise c.fail(f"placement.schedule must hold exactly {list(NAMES)}")
    for name in NAMES:
        c.bool(schedule, name, "placement.schedule.")
    weights = p["weights"]
    if not isinstance(weights, list) or len(weights) != model["n_layers"]:
        raise c.fail("placement.weights must list one object per layer")
    for i, layer in enumerate(weights):
        if not isinstance(layer, dict) or not 1 <= len(layer) <= MAX_WEIGHTS_PER_LAYER:
            raise c.fail(f"placement.weights[{i}] must map 1..{MAX_WEIGHTS_PER_LAYER} weight "
                         f"names to formats")
        for name in layer:
            if not re.match(_WEIGHT_NAME, name):
                raise c.fail(f"placement.weights[{i}] names a weight {name!r:.40}")
            c.str(layer, name, f"placement.weights[{i}].", FORMAT_PATTERN)
    c.str(p, "lm_head", where, FORMAT_PATTERN)
    pattern = p["attn_pattern"]
    if pattern is not None and not (
            isinstance(pattern, list) and len(pattern) == model["n_layers"] and all(
                isinstance(heads, list) and len(heads) == model["n_heads"] and all(
                    isinstance(x, list) and len(x) == 2 and all(
                        type(v) is int and 0 <= v <= MAX_BLOCKS for v in x) for x in heads)
                for heads in pattern)):
        raise c.fail(f"placement.attn_pattern must be null or, per layer and query head, "
                     f"[sink, window] in 0..{MAX_BLOCKS}")
    for name in code_tensors(p):
        if name not in h["tensors"]:
            raise c.fail(f"placement names a sparse weight whose codes ({name}) the file lacks")


def code_tensors(section: dict) -> list:
    """The codes tensors a checked ``placement`` section names."""
    out = [code_tensor(i, k) for i, layer in enumerate(section["weights"])
           for k, t in layer.items() if t.endswith("/sparse")]
    return out + ([code_tensor(None, "lm_head")] if section["lm_head"].endswith("/sparse") else [])
