"""Layer-by-layer trace: each layer's outputs as the device wrote them, against the float reference.

`trace_program(program)` makes a traced copy of a compiled (or loaded) program: its prefill streams
also store, from core 0's on-chip buffer to HBM, four points of every layer (the attention
block's result after the output projection, the residual after it, the FFN's result, the block
output).  The attention output before the projection and the normalised inputs are not traced:
smoothing rescales their channels on the device (folded into the norm gains and v_proj), so they
are not comparable channel by channel with the reference.  These are extra ST instructions in the same stream, so the
device (the card, or the simulated U280) writes them like any other result; nothing on the
device side is recomputed.  `trace(...)` runs a prompt through that program and through the
float reference (`Transformer.forward`'s hooks) and reports, per layer and point, the max
absolute, relative (max abs over the reference's max abs) and cosine error: where quantisation or
sparsity error enters, as hls4ml's profiling shows it for its layers.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..spec import isa
from ..errors import FlightLLMError

#: traced points of a layer, in stream order, and the reference value each is compared with
POINTS = ("attn_out", "attn_residual", "ffn_out", "block_out")
#: smallest 1 - cosine the plot shows (rounding makes identical directions 0 or slightly below)
FLOOR = 1e-9
_MISC_OP = isa.MISC_OPS


def _misc_is(insn, name: str) -> bool:
    return insn.op == "MISC" and insn.fields.get("op") == _MISC_OP.index(name)


def traced_codegen(base):
    """A subclass of the family's step code generator whose prefill layers store POINTS."""

    class Traced(base):
        trace_regions: dict = {}            # (layer, point) -> Region, set by TracedBuilder

        def _layer(self, s, cp, li, tiles):
            start = len(s)
            super()._layer(s, cp, li, tiles)
            if cp.index == 0 and self.trace_regions:
                s[start:] = self._with_stores(s[start:], cp, li)

        def _with_stores(self, body, cp, li):
            dim = self.a.dim
            out, residual = [], 0
            for insn in body:
                f = insn.fields
                residual_add = (_misc_is(insn, "eadd") and f.get("out_addr") == self.X
                                and f.get("a_addr") == self.X and f.get("b_addr") == self.O)
                if residual_add:
                    self._store(out, li, ("attn_out", "ffn_out")[residual], self.O, dim)
                out.append(insn)
                if residual_add:
                    self._store(out, li, ("attn_residual", "block_out")[residual], self.X, dim)
                    residual += 1
            if residual != 2:
                raise FlightLLMError(f"trace: layer {li} has {residual} residual adds where the "
                                     f"tracer expects 2; the code generator changed")
            return out

        def _store(self, s, li, point, addr, width):
            region = self.trace_regions[(li, point)]
            self._st(s, region, "gbuf", addr, self.T, 2 * width)

    Traced.__name__ = f"Traced{base.__name__}"
    return Traced


class TracedBuilder:
    """StepBuilder stand-in: prefill streams from the traced code generator, decode unchanged."""

    def __init__(self, builder, regions):
        from ..compiler.families import compiler_family
        self.builder, self.regions = builder, regions
        self.codegen = traced_codegen(compiler_family(builder.plan.args).codegen)
        self.codegen.trace_regions = regions

    def __getattr__(self, name):
        return getattr(self.builder, name)

    def build(self, kind: str, ctx: int, name: str | None = None):
        if kind != "prefill":
            return self.builder.build(kind, ctx, name)
        from ..compiler.buckets import step_name
        from ..compiler.program import StepProgram
        b = self.builder
        gen = self.codegen(b.plan, b.rows, ctx, b.all_logits, b.fused)
        streams = [isa.encode_stream(gen.core_stream(cp)) for cp in b.plan.cores]
        return StepProgram(name or step_name(kind, ctx), b.rows, ctx, b.all_logits,
                           isa.pack_image(streams))


def trace_program(program):
    """A copy of `program` whose prefill streams also write the traced points to HBM.

    The traced streams are generated from the program's placement: that of a compiled program
    (``compile_model`` / ``compile_compressed``), or of a loaded one re-run from its recipe.
    """
    from ..compiler.buckets import builder_of
    builder = builder_of(program)
    if builder is None or not hasattr(builder, "plan"):
        raise FlightLLMError("trace needs a compiled program (compile_model or "
                             "compile_compressed) or one loaded from a program file: the traced "
                             "streams are generated from its placement")
    plan = builder.plan
    a, rows = plan.args, builder.rows
    home = plan.cores[0].logits.channel
    regions = {}
    for li in range(a.n_layers):
        for point in POINTS:
            regions[(li, point)] = plan.layout.reserve(home, rows * a.dim * 2)
    traced = TracedBuilder(builder, regions)
    size = dict(program.channel_size)
    size[home] = plan.layout.images[home].size
    out = dataclasses.replace(program, steps={k: traced.build(k, program.ctx, k)
                                              for k in ("prefill", "decode")},
                              channel_size=size)
    out.builder = traced
    out.trace_regions = regions
    return out


@dataclass(frozen=True)
class PointError:
    """Error of one traced point of one layer, over the prompt's rows."""

    layer: int
    point: str
    max_abs: float
    relative: float          # max abs error / max abs reference value
    cosine: float            # cosine similarity of the flattened tensors (1: same direction)


@dataclass
class TraceReport:
    """Per layer and point errors of one prompt, device against the float reference."""

    model: str
    program: str
    tokens: int
    rows: list               # PointError, layer-major in POINTS order
    logits: PointError = None

    def worst(self, key: str = "relative") -> PointError:
        return max(self.rows, key=lambda r: getattr(r, key))

    def table(self) -> str:
        lines = [f"trace of {self.tokens} prompt tokens: {self.model} ({self.program}) on the "
                 f"device vs the float reference",
                 f"{'layer':>5s}  {'point':14s} {'max abs':>10s} {'relative':>10s} {'cosine':>9s}"]
        for r in self.rows + ([self.logits] if self.logits else []):
            layer = "head" if r.layer < 0 else str(r.layer)
            lines.append(f"{layer:>5s}  {r.point:14s} {r.max_abs:10.4g} {r.relative:10.3%} "
                         f"{r.cosine:9.5f}")
        w = self.worst()
        lines.append(f"largest relative error: layer {w.layer} {w.point} ({w.relative:.2%})")
        return "\n".join(lines)

    def plot(self, path=None, title: str | None = None):
        """Relative and cosine error per layer, one line per point; saved to `path` if given."""
        from matplotlib.figure import Figure
        fig = Figure(figsize=(10, 4))
        ax1, ax2 = fig.subplots(1, 2)
        layers = sorted({r.layer for r in self.rows})
        for point in POINTS:
            rs = [r for r in self.rows if r.point == point]
            ax1.plot([r.layer for r in rs], [r.relative for r in rs], marker="o", label=point)
            ax2.plot([r.layer for r in rs], [max(1 - r.cosine, FLOOR) for r in rs], marker="o",
                     label=point)
        ticks = layers if len(layers) <= 16 else layers[::-(-len(layers) // 16)]
        ax1.set(xlabel="layer", ylabel="max |device - reference| / max |reference|",
                title="relative error", xticks=ticks)
        ax2.set(xlabel="layer", ylabel=f"1 - cosine similarity (floor {FLOOR:g})",
                title="direction error", xticks=ticks, yscale="log")
        ax1.legend(fontsize="small")
        fig.suptitle(title or f"{self.model} ({self.program}): device vs float reference, "
                             f"{self.tokens} tokens")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig


def point_error(layer: int, point: str, device: np.ndarray, ref: np.ndarray) -> PointError:
    """max abs, relative and cosine error of `device` against `ref` (same shape)."""
    d = np.asarray(device, np.float64).reshape(-1)
    r = np.asarray(ref, np.float64).reshape(-1)
    if d.shape != r.shape:
        raise FlightLLMError(f"trace: {point} of layer {layer} has {d.size} values on the "
                             f"device but {r.size} in the reference")
    if not np.isfinite(d).all():
        return PointError(layer, point, math.inf, math.inf, -1.0)
    diff = float(np.abs(d - r).max()) if d.size else 0.0
    scale = float(np.abs(r).max()) if r.size else 0.0
    norm = float(np.linalg.norm(d) * np.linalg.norm(r))
    cosine = float(d @ r / norm) if norm > 0 else (1.0 if diff == 0 else 0.0)
    return PointError(layer, point, diff, diff / scale if scale > 0 else diff, cosine)


def reference_points(ckpt, ids) -> tuple:
    """({(layer, point): (T, width) array}, logits) of the float reference on `ids` from 0."""
    from ..model import Transformer
    model = Transformer.from_checkpoint(ckpt, max_seq_len=len(ids))
    got, prev = {}, {}

    def hook(name, layer, t):
        t = t.detach().float().reshape(t.shape[0], -1).numpy()
        if name == "embed":
            prev["h"] = t
        elif name in ("attn_out", "ffn_out", "block_out"):
            got[(layer, name)] = t
            if name == "attn_out":
                got[(layer, "attn_residual")] = prev["h"] + t
            if name == "block_out":
                prev["h"] = t

    logits = model.forward(list(ids), 0, hook=hook).float().numpy()
    return got, logits


def run_traced(session, ids) -> tuple:
    """Run `ids` through a traced program's prefill; ({(layer, point): array}, last logits)."""
    program = session.program
    regions = getattr(program, "trace_regions", None)
    if not regions:
        raise FlightLLMError("this session's program is not traced: make it with "
                             "trace_program(program)")
    rows = program.step("prefill").rows
    parts, logits = {}, []
    for start in range(0, len(ids), rows):
        chunk = ids[start:start + rows]
        logits.append(session.run("prefill", chunk, start))
        for key, region in regions.items():
            buf = session._region(region.channel, region.offset, region.nbytes)
            buf.sync_from_device()
            values = np.asarray(buf).view(np.float16).reshape(rows, -1)[:len(chunk)]
            parts.setdefault(key, []).append(values.astype(np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}, logits[-1]


def trace(session, ckpt, prompt, chat: bool = True, bar=None) -> TraceReport:
    """Run `prompt` on `session` (a traced program) and on the float reference of `ckpt`
    (`bar`: a tqdm bar advanced once after each of the two)."""
    ids = ckpt.tokenizer.encode_prompt(prompt, chat) \
        if not isinstance(prompt, (list, tuple, np.ndarray)) else [int(i) for i in prompt]
    if not ids:
        raise FlightLLMError("trace: the prompt is empty")
    if len(ids) > session.program.ctx:
        raise FlightLLMError(f"trace: the prompt has {len(ids)} tokens, more than the "
                             f"program's context {session.program.ctx}")
    if bar is not None:
        bar.set_postfix_str("run on the device")
    device, dev_logits = run_traced(session, ids)
    if bar is not None:
        bar.update()
        bar.set_postfix_str("float reference")
    ref, ref_logits = reference_points(ckpt, ids)
    if bar is not None:
        bar.update()
    rows = [point_error(li, point, device[(li, point)], ref[(li, point)])
            for li in range(ckpt.args.n_layers) for point in POINTS]
    last = dev_logits[-1]
    logits = point_error(-1, "logits (last)", last, ref_logits[len(ids) - 1])
    what = session.program.meta.get("quantization", "W8A8")
    return TraceReport(ckpt.args.name, what.split(",")[0], len(ids), rows, logits)
