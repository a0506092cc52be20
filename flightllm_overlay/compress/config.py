"""`CompressionConfig`: the budgets and methods of one compression setting, with the named presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import CompileError
from .prune import CRITERIA, check_density

#: The activations the compiler can run as two INT8 planes (hi and the residual's lo, the MISC
#: quant's `residual`): every linear's input (each weight tile multiplies both planes, the
#: outputs are added) and q and k (the attention scores: three MPE passes, hi.hi + hi.lo +
#: lo.hi, and the KV cache holds k's second plane); the emulation imports it, compiler/recipe.py
#: holds the same tuple (tests/test_wide_points.py holds them equal).
WIDE_POINTS = ("attn_in", "q", "k", "attn_out", "ffn_in", "ffn_mid", "head_in")
#: The wide points that are a linear's input (where activation groups apply when not wide).
LINEAR_INPUTS = ("attn_in", "attn_out", "ffn_in", "ffn_mid", "head_in")


def wide_points_named(names) -> tuple:
    """The wide points a user names: 'all' (`WIDE_POINTS`), 'none', or point names (checked
    where the config takes them)."""
    return {("all",): WIDE_POINTS, ("none",): ()}.get(tuple(names), tuple(names))


#: Where density_qk is met: in every q_proj/k_proj ('linear'), over each layer's q_proj and
#: k_proj together ('layer'), or over all of them ('model'); the last two need the
#: attention-aware scores, a predicted attention KL comparable between linears.
QK_BUDGETS = ("linear", "layer", "model")
#: How the bit allocation compares formats between linears: 'fisher' by the predicted loss
#: increase (output errors weighted by the loss's squared gradients, `compress.fisher`),
#: 'relative' by each linear's relative output error.
ALLOCATIONS = ("fisher", "relative")
#: channels per INT8 activation scale the device takes at the linears' inputs (`agroup`)
ACT_GROUPS = (32, 64, 128)
#: The named settings (`CompressionConfig.preset`; the classmethod of each, '-' read as '_').
PRESETS = ("flightllm", "flightllm-wide", "dense4", "paper", "w8a8", "magnitude")


@dataclass(frozen=True)
class CompressionConfig:
    """One compression setting.

    density_qk / density: fraction of weights kept (N:16 blocks) in q_proj and k_proj / in the
    other linears (1 = dense).  avg_bits: budget of average code bits per kept weight (the
    usual "average bits"); with group_bits=True the budget also counts each group's 32-bit
    (M, B) (then 4-bit in groups of 32 counts 5 bits, 3-bit/64 counts 3.5, 8-bit 8).
    bit_choices and group_choices: the formats the allocator may pick per linear (with the
    code-bits budget the smallest group always wins; the report gives HBM bits with everything).  criterion:
    'wanda' (|W| * ||x||) or 'magnitude' for the pruning scores.  error_feedback: GPTQ-like
    quantisation with SparseGPT-like reconstruction of pruned weights (else round-to-nearest).
    act_bits: activations on the device (8: INT8 per row, dynamic).  calib_tokens: calibration
    tokens used; smooth_alpha: SmoothQuant migration strength (None: no smoothing);
    smooth_group: one smoothing factor per this many input channels (keeps group-wise low-bit
    grids of the source weights intact; None: per channel; a group's factor is the geometric
    mean of its channels', which dilutes an outlier channel's, so the group presets migrate
    harder: alpha 0.9, measured best of 0.5/0.75/0.9/1.0 on SmolLM2, docs/compression.md); damp:
    Hessian damping (fraction of its mean diagonal).  attn_mass: block-sparse prefill
    attention, each head keeping at least this share of its calibration attention mass
    (`compress.attention`; None: dense attention).  qk_criterion: the pruning scores of q_proj
    and k_proj: 'attention' (their effect on the attention distributions, `compress.qkscore`),
    or None for `criterion`'s.  keep_grid: where a weight already sits on a low-bit group grid
    (GGUF Q4_0/Q4_1/K-quants) and its format is chosen, keep the source's codes (`compress.grid`)
    when that gives the smaller calibrated output error.  wide_points: the activations of
    `WIDE_POINTS` the device quantises as two INT8 planes (hi, then the residual's lo at its own
    scale; about 15 bits; decode reads a linear's weights once for both, the prefill MPE does
    that linear twice; wide q or k add score passes, wide k a second K plane in the KV cache;
    docs/compression.md).  sequential: with error_feedback,
    pack the layers in order, each linear's error feedback weighing its error by the inputs of
    the partly compressed model (`compress.sequential`; GPTQ's and SparseGPT's order).
    allocation: how formats are compared between linears under the bit budget: 'fisher' (the
    predicted loss increase, each output row's error weighted by the squared gradient of the
    calibration loss there; one backward pass over the calibration tokens) or 'relative'
    (each linear's relative output error, every linear alike).  act_order: the error
    feedback quantises a linear's input columns in order of decreasing calibration energy, the
    group parameters chosen beforehand (GPTQ's act order with static groups); False: in column
    order, each group's parameters chosen when reached.  refit: after the error feedback, each
    row's group parameters (M, B) re-fitted by least squares to its calibrated output error, the
    codes kept (`refit.py`; not on a kept source grid, whose parameters are the grid's).
    act_group: shared-exponent activation groups of this many channels at every linear input
    that is not wide (32, 64 or 128; the ISA's `agroup`: each group's INT8 step is the row's
    divided by up to 2^7, so an outlier channel coarsens only its own group); None: one scale
    per row.  A model whose linear inputs are not whole groups runs one scale per row
    (`CompressedModel.act_group`, the report).  exact_groups: dense linears below 8 bits run on
    the MPE's exact group arithmetic (ISA `wcodes`): the device computes with (q M + B)/256
    times the row scale instead of rounding each weight to INT8 (`PackedWeight.exact`), and the
    codes and parameters are chosen for that arithmetic; a kept source grid is then held to
    (M, B)'s fixed point.  N:16-sparse and 8-bit linears keep the INT8 path (`exact_for`).
    """

    name: str = "custom"
    density_qk: float = 1.0
    density: float = 1.0
    avg_bits: float = 8.0
    group_bits: bool = False
    bit_choices: tuple = (8,)
    group_choices: tuple = (32, 64, 128)
    criterion: str = "wanda"
    error_feedback: bool = True
    act_bits: int = 8
    calib_tokens: int = 512
    smooth_alpha: float | None = 0.5
    smooth_group: int | None = None
    damp: float = 0.01
    attn_mass: float | None = None
    qk_criterion: str | None = None
    keep_grid: bool = True
    wide_points: tuple = ()
    qk_budget: str = "linear"
    sequential: bool = False
    allocation: str = "fisher"
    act_order: bool = True
    refit: bool = True
    act_group: int | None = None
    exact_groups: bool = False

    def __post_init__(self):
        check_density(self.density_qk, "q_proj/k_proj")
        check_density(self.density, "the linears")
        if self.criterion not in CRITERIA:
            raise CompileError(f"unknown pruning criterion {self.criterion!r}; use one of {CRITERIA}")
        if self.qk_criterion not in (None, "attention") + CRITERIA:
            raise CompileError(f"unknown q/k pruning criterion {self.qk_criterion!r}; use "
                               f"'attention', one of {CRITERIA}, or None")
        if self.qk_budget not in QK_BUDGETS:
            raise CompileError(f"unknown q/k budget {self.qk_budget!r}; use one of {QK_BUDGETS}")
        if self.qk_budget != "linear" and self.qk_criterion != "attention":
            raise CompileError(f"qk_budget={self.qk_budget!r} shares the q/k density between "
                               f"linears by predicted attention KL, which needs "
                               f"qk_criterion='attention'; with other q/k scores use "
                               f"qk_budget='linear'")
        if self.allocation not in ALLOCATIONS:
            raise CompileError(f"unknown bit allocation {self.allocation!r}; use one of "
                               f"{ALLOCATIONS}")
        if self.act_bits != 8:
            raise CompileError(f"activations are INT8 on the device; act_bits={self.act_bits} "
                               f"is not supported")
        if self.avg_bits <= 0:
            raise CompileError(f"avg_bits must be positive, got {self.avg_bits}")
        if self.attn_mass is not None and not 0 < self.attn_mass <= 1:
            raise CompileError(f"attn_mass is a share of the attention mass in (0, 1], got "
                               f"{self.attn_mass}")
        if self.calib_tokens < 16:
            raise CompileError(f"calib_tokens={self.calib_tokens} is too few; use a few hundred")
        wide = tuple(self.wide_points)
        if set(wide) - set(WIDE_POINTS) or len(set(wide)) != len(wide):
            raise CompileError(f"wide_points must be distinct names of {WIDE_POINTS}, got "
                               f"{wide}")
        object.__setattr__(self, "wide_points", tuple(p for p in WIDE_POINTS if p in wide))
        if self.act_group is not None and self.act_group not in ACT_GROUPS:
            raise CompileError(f"act_group={self.act_group}: channels per activation group are "
                               f"one of {ACT_GROUPS} (None: one scale per row)")
        if not isinstance(self.exact_groups, bool):
            raise CompileError(f"exact_groups is True or False, got {self.exact_groups!r}")
        object.__setattr__(self, "bit_choices", tuple(int(b) for b in self.bit_choices))
        object.__setattr__(self, "group_choices", tuple(int(g) for g in self.group_choices))

    def density_of(self, linear: str) -> float:
        return self.density_qk if linear in ("wq", "wk") else self.density

    def criterion_of(self, linear: str) -> str:
        if linear in ("wq", "wk") and self.qk_criterion is not None:
            return self.qk_criterion
        return self.criterion

    def exact_for(self, bits: int, sparse: bool) -> bool:
        """Whether a linear packed `bits`-bit, sparse or dense, runs on the exact group
        arithmetic (`PackedWeight.exact`): with exact_groups, every dense one below 8 bits."""
        return bool(self.exact_groups) and bits < 8 and not sparse

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bit_choices"], d["group_choices"] = list(self.bit_choices), list(self.group_choices)
        d["wide_points"] = list(self.wide_points)
        if self.act_group is None:          # (files written before it carry no key)
            del d["act_group"]
        if not self.exact_groups:           # (nor this one: such files stay as they were)
            del d["exact_groups"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CompressionConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CompileError(f"unknown compression settings {unknown}; known: {sorted(names)}")
        # (files written before the re-fit were packed without; before exact groups, on INT8)
        d = {"refit": False, "exact_groups": False, **d}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def but(self, **changes) -> "CompressionConfig":
        return replace(self, **changes)

    # ---------------------------------------------------------------- presets
    @classmethod
    def w8a8(cls) -> "CompressionConfig":
        """INT8 weights per output row, dense, INT8 activations in shared-exponent groups of 32
        channels (SmolLM2, emulated: +1.86% -> +0.76% over float against one scale per row)."""
        return cls(name="w8a8", avg_bits=8.0, bit_choices=(8,), error_feedback=False,
                   act_group=32)

    @classmethod
    def flightllm(cls) -> "CompressionConfig":
        """The default FlightLLM-style setting: q/k at 70% density in N:16 blocks, mixed
        2/3/4/8-bit weights averaging at most 4 code bits per weight (groups of 32-128),
        INT8 activations; q/k pruned by their effect on the attention distributions, 70% of
        each layer's q_proj and k_proj weights together (`qk_budget='layer'`: on SmolLM2 in the
        FP16 emulation +3.28% / +1.85% over float and KL 0.033 along the answers, against
        +3.35% / +2.47% and 0.039 at 70% in each linear; `'model'` shares it between layers
        too, not better), the rest by Wanda scores; GPTQ-like error feedback, a source's
        low-bit grid kept where chosen;
        smoothing with one factor per 32 input channels (keeps a group-32 grid of the source
        weights, as SmolLM2's Q4_1), migration strength 0.9; 2,048 calibration tokens (against
        512 on SmolLM2: -1.6 and -2.2 points of perplexity on two 4,096-token texts, about 3
        minutes on 2 cores); activations in shared-exponent groups of 32 channels at every
        linear input (SmolLM2 on the simulated overlay, two 4,096-token texts: +6.25% / +4.75%
        over float with one scale per row, +3.83% / +2.91% with groups, +3.58% / +3.04% with
        the group parameters also re-fitted, `refit`); the dense linears on the MPE's exact
        group arithmetic (`exact_groups`: +2.91% / +2.52%; docs/compression.md)."""
        return cls(name="flightllm", density_qk=0.7, avg_bits=4.0, bit_choices=(2, 3, 4, 8),
                   smooth_group=32, smooth_alpha=0.9, qk_criterion="attention",
                   calib_tokens=2048, act_group=32, exact_groups=True, qk_budget="layer")

    @classmethod
    def flightllm_wide(cls) -> "CompressionConfig":
        """The flightllm setting with one scale per row and down_proj's and the LM head's inputs
        as two INT8 planes (before activation groups, the way to +5%): on SmolLM2 on the
        simulated overlay +4.80% / +3.70% over float on two 4,096-token texts, against +6.25% /
        +4.75% (docs/compression.md), for 14% more decode and 27% more prefill cycles."""
        return cls.flightllm().but(name="flightllm-wide", wide_points=("ffn_mid", "head_in"),
                                   act_group=None)

    @classmethod
    def dense4(cls) -> "CompressionConfig":
        """The accuracy preset: 4-bit weights in groups of 32, dense, a Q4_1 source's own grid
        (kept, `keep_grid`) on the MPE's exact group arithmetic (`exact_groups`: the grid held to
        (M, B)'s fixed point), and every activation point the device can widen as two INT8
        planes (`WIDE_POINTS`: the linears' inputs, q and k).  SmolLM2 on the simulated
        overlay, two 4,096-token texts: +0.07% / +0.08% over float (+0.65% / +0.41% with one
        plane and activation groups of 32); its answers to the prompt set: teacher-forced
        top-1 98.3% / KL 0.0010 (95.0% / 0.0076), first sentence 20 of 23 (11 of 23), every
        miss at a float near tie (0.01 to 0.05 logits); for 34% more decode and 75% more
        prefill cycles (docs/compression.md).
        `.but(wide_points=())` is the one-plane setting.  Error feedback in column order where
        a grid is not kept; activation groups of 32 where a point is not wide."""
        return cls(name="dense4", avg_bits=4.0, bit_choices=(4,), group_choices=(32,),
                   smooth_group=32, smooth_alpha=0.9, act_order=False, act_group=32,
                   exact_groups=True, wide_points=WIDE_POINTS)

    @classmethod
    def paper(cls) -> "CompressionConfig":
        """The paper's budget: the flightllm setting at about 3.5 average code bits, every weight
        through the unit's INT8 (exact group arithmetic measured about a point worse on SmolLM2:
        +18.5% / +17.0% against +17.6% / +16.2% on the simulated overlay; docs/compression.md)."""
        return cls.flightllm().but(name="paper", avg_bits=3.5, exact_groups=False)

    @classmethod
    def magnitude(cls) -> "CompressionConfig":
        """Baseline at the FlightLLM budget: magnitude pruning, round-to-nearest weights."""
        return cls.flightllm().but(name="magnitude", criterion="magnitude", qk_criterion=None,
                                   qk_budget="linear", error_feedback=False)

    @classmethod
    def preset(cls, name: str) -> "CompressionConfig":
        if name not in PRESETS:
            raise CompileError(f"unknown compression preset {name!r}; choose one of "
                               f"{sorted(PRESETS)}")
        return getattr(cls, name.replace("-", "_"))()
