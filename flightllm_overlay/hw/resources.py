"""Resource estimate of the accelerator per kernel (DSP48E2, BRAM36, URAM, LUT, FF) from the target config.

An estimate, not a synthesis report: no kernel has been through Vitis HLS or Vivado here.  Every
count follows from `config.Target` (MPE parallelism, MISC width, on-chip buffers, HBM ports per
core) through a rule stated beside it; every per-unit cost names its basis.  `benchmarks/resources.py`
prints the table beside the paper's U280 figures and the device's capacity.

Rules, per core (the scheduler once):

* MPE: ``mm_macs_per_cycle / dsp_macs`` DSP48E2s (two INT8 MACs share one weight per DSP,
  WP486 packing, facts 1.2).  MV mode runs on the same CSD chains (``mv_macs <= mm_macs``) and
  adds none.  The epilogue (INT32 -> FP32, x activation scale, x weight scale, -> FP16) has one
  lane per output the array completes per cycle at the smallest K it is sized for (`EPILOGUE_MIN_K`).
* MISC: ``misc_elements_per_cycle`` FP32 lanes (FP16 in and out, `docs/design.md`), each with the
  operators RMSNorm, softmax, SiLU, RoPE and quantisation need (`MISC_LANE`).
* memctrl: one 512-bit AXI master per HBM pseudo-channel it owns, and a dequantiser per byte lane
  (the paper's MMU unpacks low-bit weights with group scales); its multipliers are narrower than
  a DSP48E2 needs and go to LUTs (`DEQUANT_LANE`).  `dequant_in_dsp_what_if` gives the DSP cost if
  they were packed into DSPs instead.
* on-chip buffers: each buffer goes to URAM (4096 x 72 = 288 Kb, depth cascades) or BRAM36 (36 Kb,
  best of its 512x72 ... 32Kx1 shapes) as stated per buffer in `BUFFER_RULES`; blocks =
  ceil(depth / shape depth) x ceil(line bits / shape width).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import config
from .design import AXI_DATA_WIDTH, CODE_SUM_TREES

# ---------------------------------------------------------------------------------------------
# Device primitives and figures to compare with
# ---------------------------------------------------------------------------------------------
URAM_SHAPE = (4096, 72)                         # depth x width: 288 Kb (UG573)
BRAM36_SHAPES = ((512, 72), (1024, 36), (2048, 18), (4096, 9), (8192, 4), (16384, 2), (32768, 1))
RESOURCES = ("DSP", "BRAM36", "URAM", "LUT", "FF")

#: XCU280 capacity (Alveo U280 data sheet DS963).  Each target file states its own device's
#: (`device`, read as `Target.device_capacity`); this copy is for unnamed-buffer mapping.
U280_CAPACITY = config.load_target("u280").device_capacity
#: The paper's U280 build (facts 1.6, secondary sources); FF not reported.
PAPER_U280 = {"DSP": 6345, "BRAM36": 1252, "URAM": 792, "LUT": 574_000, "FF": None}
#: SLRs of the XCU280; their resources are taken as equal thirds (the shell is not subtracted).
U280_SLRS = 3
#: Utilisation above which placement and routing at 225 MHz on an SSI device gets hard (rule of
#: thumb; the shell's static region also takes a share that this estimate does not subtract).
TIGHT = 0.80


@dataclass(frozen=True)
class Cost:
    """Resources of one thing (BRAM36 may be fractional: a BRAM18 is half a BRAM36)."""

    dsp: float = 0
    bram: float = 0
    uram: float = 0
    lut: float = 0
    ff: float = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def __mul__(self, n: float) -> "Cost":
        return Cost(*(a * n for a in self.as_tuple()))

    __rmul__ = __mul__

    def as_tuple(self) -> tuple:
        return (self.dsp, self.bram, self.uram, self.lut, self.ff)

    def as_dict(self) -> dict:
        """{"DSP": .., "BRAM36": .., ...}, whole blocks (rounded up)."""
        return {k: math.ceil(round(v, 6)) for k, v in zip(RESOURCES, self.as_tuple())}


# ---------------------------------------------------------------------------------------------
# Per-unit costs, each with its basis
# ---------------------------------------------------------------------------------------------
#: Floating-point operators: typical Vitis HLS 2023.1 / Floating-Point Operator (PG060) figures on
#: UltraScale+ in the DSP-using variants HLS picks by default; good to about +-50% in LUT/FF.
OPS = {
    "fp32_mul": (Cost(dsp=3, lut=110, ff=150), "PG060 single multiply, max DSP usage: 3 DSP48E2"),
    "fp32_add": (Cost(dsp=2, lut=230, ff=350), "PG060 single add/sub, full DSP usage: 2 DSP48E2"),
    "fp32_exp": (Cost(dsp=7, lut=850, ff=1000), "PG060 single exponential: ~7 DSP48E2"),
    "fp32_recip": (Cost(lut=800, ff=1400), "PG060 single reciprocal/divide, no-DSP variant"),
    "fp32_rsqrt": (Cost(lut=500, ff=800), "PG060 single reciprocal square root, no-DSP variant"),
    "int32_to_fp32": (Cost(lut=150, ff=200), "fixed-to-float conversion in fabric"),
    "fp_convert": (Cost(lut=60, ff=60), "FP16 <-> FP32 conversion in fabric"),
}


def _op(*names) -> Cost:
    total = Cost()
    for name in names:
        total = total + OPS[name][0]
    return total


#: One DSP48E2 of a configurable sparse DSP chain with what sits around it, from Yosys 0.23's
#: `synth_xilinx -family xcup` of src/rtl/csd_chain.v (L = 16, DSP48E2 instantiated): 2,539 LUT
#: (730 of them SRL16E) and 852 FF for 16 DSPs.  Per DSP: the sparse MUX (16 bit-slices of a 16:1
#: mux, 4 LUT6 each = 64), the reduction node and overflow adjust (~50), the systolic operand skew
#: and result deskew as SRL16E (~46); FF: pipeline registers.  tests/test_rtl_synth.py keeps this
#: within 20% of the synthesis.
CHAIN_DSP = Cost(dsp=1, lut=159, ff=53)
#: Per chain of the MPE core (src/rtl/mpe_core.v) beyond its 16 DSPs: the 16 x 2 INT32 accumulator
#: bank with its segment select and adders, the team sum, the result register and the activation
#: read muxes.  Yosys of mpe_core at 2 chains (benchmarks/mpe_rtl_synth.py): 12,324 LUT (1,460
#: SRL16E) and 5,086 FF, minus 2 x 16 CHAIN_DSP, over 2 chains; the activation buffers themselves
#: (LUTRAM there) are the abuf, counted with the buffers below.
MPE_CHAIN_EXTRA = Cost(lut=3618, ff=1695)
#: One INT8 DSP48E2 of the MPE: the synthesized chain (the hand estimate this replaces, 84 LUT and
#: 56 FF, left out the operand skew registers: 1.9x fewer LUTs than the chain takes).  The
#: accumulation behind the chains is not in it: the paper's design budget for it is not known, and
#: the RTL's own (fabric banks, MPE_CHAIN_EXTRA) does not fit the device; see rtl_mpe_what_if.
MPE_DSP = CHAIN_DSP
#: One DSP of the RTL MPE core as written (src/rtl/mpe_core.v), per-chain costs shared out.
RTL_MPE_DSP = CHAIN_DSP + MPE_CHAIN_EXTRA * (1 / 16)
#: DSP48E2 per configurable sparse DSP chain (src/rtl/csd_chain.v): one partial sum per packed
#: MAC lane leaves a chain per pass, over 16 input channels.
CHAIN_LEN = 16
#: One activation-group shifter (ISA `agroup`): a chain's partial sum over 16 channels (one
#: group of >= 32 holds them) enters its accumulator shifted left by 7 - e, so each chain output
#: gets a 0-7 barrel shifter on its ~20-bit sum (three 2:1 mux levels over 27 bits, two LUT6
#: levels: ~48 LUT) and an accumulator 8 bits wider (~8 LUT of carry chain), with a pipeline
#: register; an estimate, not synthesized (the RTL chain does not have it).
GROUP_SHIFTER = Cost(lut=56, ff=36)
#: One code-group combine (ISA `wcodes`, exact group arithmetic): per chain output a DSP48E2
#: multiplies the group's code sum P by its 16-bit M, then the rows' activation sum A by its B,
#: accumulating both in its 48-bit P register (one multiply a cycle: a group of 32 leaves the
#: chain in two passes); LUTs for the two operand muxes (27 + 18 bits), FFs for the M, B and A
#: operand registers.  An estimate, not synthesized (the RTL chain does not have it).
CODE_COMBINE = Cost(dsp=1, lut=25, ff=60)
#: One activation-group sum tree of the code path: 16 INT8 channels of a row a cycle into a
#: 13-bit group sum (15 adders of 9-12 bits, ~150 LUT), with its row's accumulator.
CODE_SUM_TREE = Cost(lut=160, ff=100)
#: The rows' group sums of a row block, kept for every output pass: 128 rows x 344 groups
#: (K 11,008, LLaMA-2-7B's down_proj, in groups of 32) x 24 bits = 1.06 Mbit: four URAM.
CODE_SUM_STORE = Cost(uram=4, lut=200, ff=100)
#: Smallest reduction length K the epilogue keeps up with: a 16-wide chain finishes one output
#: every K/16 cycles, so the array completes mm_macs/K outputs per cycle.  LLaMA-family linears
#: have K >= the hidden size (576 for SmolLM2-135M); attention P.V with under 256 keys stalls briefly.
EPILOGUE_MIN_K = 256
EPILOGUE_LANE = _op("int32_to_fp32", "fp32_mul", "fp32_mul", "fp_convert")
#: One MISC lane: FP16 -> FP32 in, FP32 -> FP16 out; two multiplies (x*x and x*r*g of RMSNorm,
#: RoPE, scaling), two adds (max-subtract and running sum of softmax, RoPE add, accumulation),
#: an exponential (softmax, SiLU) and a reciprocal (SiLU's 1/(1+e^-x)).
MISC_LANE = _op("fp_convert", "fp_convert", "fp32_mul", "fp32_mul", "fp32_add", "fp32_add",
                "fp32_exp", "fp32_recip")
#: Once per MISC unit: 1/sqrt of RMSNorm; the remote-SFU access engine (~2K LUT, estimated).
MISC_SHARED = _op("fp32_rsqrt") + Cost(lut=2000, ff=2500)
#: One memctrl dequantiser byte lane: a <=4-bit code times an INT8 group scale, shift and round.
#: Multipliers this narrow are built from LUTs (Vivado infers DSP48E2 from about 10x10 bits up),
#: ~30 LUT each.
DEQUANT_LANE = Cost(lut=30, ff=16)
#: One 512-bit HLS m_axi port: read and write burst buffers (one BRAM36 each, 64 beats x 512 bits)
#: and the AXI adapter (~1.5K LUT, 2.5K FF, typical HLS report).
M_AXI_PORT = Cost(bram=2, lut=1500, ff=2500)
#: One s_axilite control port with its argument registers (typical HLS report).
CONTROL_PORT = Cost(lut=400, ff=600)
#: One dispatch queue of the scheduler (one per unit queue per core): 512 x 32-bit FIFO = one BRAM18.
DISPATCH_QUEUE = Cost(bram=0.5, lut=80, ff=120)
#: Instruction fetch, decode and dependency-token bookkeeping of the scheduler (estimated).
SCHEDULER_LOGIC = Cost(lut=3000, ff=4000)

#: Where each on-chip buffer goes, and why; (kernel that owns it, primitive, reason).
BUFFER_RULES = {
    "wbuf": ("mpe", "URAM", "largest buffer, deep lines read once per cycle: URAM is dense; the "
                            "paper's build holds most of its memory in URAM"),
    "abuf": ("mpe", "URAM", "deep, moderately wide: far fewer URAM than BRAM36 blocks"),
    "meta": ("mpe", "URAM", "deep and narrow: a couple of cascaded URAM"),
    "bias": ("mpe", "URAM", "deep, wide lines: far fewer URAM than BRAM36 blocks"),
    "fsb": ("mpe", "BRAM36", "a few KiB: one BRAM36 rather than a mostly empty URAM"),
    "gbuf": ("misc", "BRAM36", "shallow and very wide (a whole line per cycle for the MISC lanes and "
                               "MPE outputs): in URAM most of every block's depth would be empty"),
}


# ---------------------------------------------------------------------------------------------
# Memory mapping
# ---------------------------------------------------------------------------------------------
def blocks(depth: int, bits: int, primitive: str) -> int:
    """Memory blocks of `primitive` ("URAM" or "BRAM36") holding depth x bits, best shape."""
    shapes = (URAM_SHAPE,) if primitive == "URAM" else BRAM36_SHAPES
    return min(math.ceil(depth / d) * math.ceil(bits / w) for d, w in shapes)


@dataclass(frozen=True)
class BufferMapping:
    name: str
    kernel: str
    depth: int
    bits: int                    # line width in bits
    primitive: str               # "URAM" | "BRAM36"
    blocks: int
    other: str                   # the primitive not chosen
    other_blocks: int
    reason: str

    @property
    def cost(self) -> Cost:
        return Cost(uram=self.blocks) if self.primitive == "URAM" else Cost(bram=self.blocks)


def map_buffer(buf: config.Buffer) -> BufferMapping:
    """Mapping of one buffer by `BUFFER_RULES`; an unknown buffer takes the primitive that uses
    the smaller share of the device's pool of it."""
    bits = buf.width * 8
    counts = {p: blocks(buf.depth, bits, p) for p in ("URAM", "BRAM36")}
    if buf.name in BUFFER_RULES:
        kernel, primitive, reason = BUFFER_RULES[buf.name]
    else:
        share = {"URAM": counts["URAM"] / U280_CAPACITY["URAM"],
                 "BRAM36": counts["BRAM36"] / U280_CAPACITY["BRAM36"]}
        primitive = min(share, key=share.get)
        kernel, reason = "mpe", "no stated rule: the smaller share of the device's pool"
    other = "BRAM36" if primitive == "URAM" else "URAM"
    return BufferMapping(buf.name, kernel, buf.depth, bits, primitive, counts[primitive], other,
                         counts[other], reason)


# ---------------------------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """`count` of one thing in one kernel instance (of a core, or the scheduler)."""

    kernel: str
    what: str
    count: float
    unit: Cost
    basis: str

    @property
    def cost(self) -> Cost:
        return self.unit * self.count


@dataclass(frozen=True)
class Estimate:
    target: str
    cores: int
    items: tuple                 # per kernel instance: per core, except the scheduler's
    buffers: tuple               # BufferMapping per on-chip buffer of one core
    dequant_lanes: int = 0       # per core, for the what-if
    notes: tuple = field(default=())
    capacity: dict = field(default_factory=lambda: dict(U280_CAPACITY))  # None: not stated
    slrs: int = U280_SLRS
    board: str = "U280"          # short name in the report

    def instances(self, kernel: str) -> int:
        return 1 if kernel == "scheduler" else self.cores

    def kernel_cost(self, kernel: str) -> Cost:
        """Whole-device cost of one kernel (all its instances), buffers included."""
        per = Cost()
        for item in self.items:
            if item.kernel == kernel:
                per = per + item.cost
        for buf in self.buffers:
            if buf.kernel == kernel:
                per = per + buf.cost
        return per * self.instances(kernel)

    @property
    def kernels(self) -> tuple:
        names = []
        for k in [i.kernel for i in self.items] + [b.kernel for b in self.buffers]:
            if k not in names:
                names.append(k)
        return tuple(names)

    @property
    def total(self) -> Cost:
        total = Cost()
        for kernel in self.kernels:
            total = total + self.kernel_cost(kernel)
        return total

    @property
    def buffer_blocks(self) -> dict:
        """{"URAM": n, "BRAM36": n} for the on-chip buffers of all cores."""
        out = {"URAM": 0, "BRAM36": 0}
        for buf in self.buffers:
            out[buf.primitive] += buf.blocks * self.cores
        return out

    def per_slr(self) -> dict:
        """Cost on the busiest SLR: one core, plus the scheduler on SLR0."""
        core = Cost()
        for kernel in self.kernels:
            if kernel != "scheduler":
                core = core + self.kernel_cost(kernel) * (1 / self.cores)
        return (core + self.kernel_cost("scheduler")).as_dict()

    def utilization(self) -> dict:
        """Share of the device per resource (None where the target states no capacity)."""
        total = self.total.as_dict()
        cap = self.capacity
        return {k: None if cap[k] is None else total[k] / cap[k] for k in RESOURCES}

    def slr_utilization(self) -> dict:
        slr, cap = self.per_slr(), self.capacity
        return {k: None if cap[k] is None else slr[k] / (cap[k] / self.slrs) for k in RESOURCES}

    @property
    def fits(self) -> bool | None:
        """Whether the estimate fits the device; None if the target states no capacity."""
        if any(v is None for v in self.capacity.values()):
            return None
        return (all(u <= 1 for u in self.utilization().values())
                and all(u <= 1 for u in self.slr_utilization().values()))

    def verdict(self) -> str:
        if self.fits is None:
            return (f"no fit verdict: the target file states no capacity of the {self.board}'s "
                    f"device for {[k for k, v in self.capacity.items() if v is None]}")
        use = self.utilization()
        slr = self.slr_utilization()
        worst = max(use, key=use.get)
        worst_slr = max(slr, key=slr.get)
        if not self.fits:
            over = [k for k in RESOURCES if use[k] > 1 or slr[k] > 1]
            return (f"DOES NOT FIT the {self.board}: {', '.join(over)} over capacity "
                    f"(device {use[worst]:.1%} {worst}, busiest SLR {slr[worst_slr]:.1%} "
                    f"{worst_slr})")
        tight = [k for k in RESOURCES if use[k] > TIGHT or slr[k] > TIGHT]
        head = (f"fits the {self.board} (device: {use[worst]:.1%} {worst} at most; busiest SLR: "
                f"{slr[worst_slr]:.1%} {worst_slr})")
        return head + (f"; tight (>{TIGHT:.0%}): {', '.join(tight)}" if tight else "")

    def rtl_mpe_what_if(self):
        """Device LUT/FF if every MPE were src/rtl/mpe_core.v as Yosys synthesizes it: its INT32
        accumulator banks, segment select and team sums in fabric (plus 4 DSP48E2 of counters);
        None when the board's LUT/FF capacity is not stated."""
        if self.capacity.get("LUT") is None or self.capacity.get("FF") is None:
            return None
        n = self.cores * sum(i.count for i in self.items
                             if i.kernel == "mpe" and i.what.startswith("INT8 DSP48E2"))
        total = self.total
        lut = total.lut + (RTL_MPE_DSP.lut - MPE_DSP.lut) * n
        ff = total.ff + (RTL_MPE_DSP.ff - MPE_DSP.ff) * n
        return {"LUT": lut, "FF": ff, "LUT %": 100 * lut / self.capacity["LUT"],
                "FF %": 100 * ff / self.capacity["FF"]}

    def dequant_in_dsp_what_if(self) -> int:
        """Extra DSPs if every memctrl dequantiser lane used half a DSP48E2 (two per DSP)."""
        return math.ceil(self.dequant_lanes / 2) * self.cores


def estimate(target: config.Target | str | None = None) -> Estimate:
    """Resource estimate of a target (default u280; a `Target` may carry what-if overrides)."""
    t = config.load_target(target or "u280") if not isinstance(target, config.Target) else target
    dsp_macs = t.dsp_macs
    n_ports = max(len(chs) for chs in t.core_channels)   # one memctrl kernel for every core
    dequant_lanes = n_ports * AXI_DATA_WIDTH // 8
    mpe_dsps = math.ceil(max(t.mm_macs_per_cycle, t.mv_macs_per_cycle) / dsp_macs)
    chain_outputs = math.ceil(mpe_dsps / CHAIN_LEN) * dsp_macs   # a packed MAC lane per chain
    items = [
        Item("mpe", f"INT8 DSP48E2 ({dsp_macs} MACs each) with sparse MUX, RN, OAU",
             mpe_dsps, MPE_DSP, "mm_macs_per_cycle / dsp_macs; MV mode reuses these chains"),
        Item("mpe", "activation-group shifters (0-7 shift per chain output, accumulator +8 "
                    "bits)", chain_outputs, GROUP_SHIFTER,
             f"one per packed MAC lane of each {CHAIN_LEN}-DSP chain (ISA agroup)"),
        Item("mpe", "code-group combine DSPs (M x P + B x A per chain output)", chain_outputs,
             CODE_COMBINE, f"one per packed MAC lane of each {CHAIN_LEN}-DSP chain (ISA wcodes)"),
        Item("mpe", "code-group activation sum trees", CODE_SUM_TREES, CODE_SUM_TREE,
             "design.CODE_SUM_TREES (ISA wcodes)"),
        Item("mpe", "code-group activation sum store", 1, CODE_SUM_STORE,
             "a row block's group sums (ISA wcodes)"),
        Item("mpe", "epilogue lanes (INT32->FP32, x2 scales, ->FP16)",
             max(1, t.mm_macs_per_cycle // EPILOGUE_MIN_K), EPILOGUE_LANE,
             f"mm_macs_per_cycle / EPILOGUE_MIN_K ({EPILOGUE_MIN_K})"),
        Item("mpe", "control port", 1, CONTROL_PORT, "HLS s_axilite"),
        Item("misc", "FP32 lanes (2 mul, 2 add, exp, recip, FP16 in/out)",
             t.misc_elements_per_cycle, MISC_LANE, "misc.elements_per_cycle"),
        Item("misc", "rsqrt + remote-SFU access engine", 1, MISC_SHARED, "one per unit"),
        Item("misc", "control port", 1, CONTROL_PORT, "HLS s_axilite"),
        Item("memctrl", f"{AXI_DATA_WIDTH}-bit m_axi ports", n_ports, M_AXI_PORT,
             "one per HBM pseudo-channel of the core"),
        Item("memctrl", "dequantiser byte lanes (LUT multipliers)", dequant_lanes, DEQUANT_LANE,
             f"{AXI_DATA_WIDTH // 8} per port"),
        Item("memctrl", "control port", 1, CONTROL_PORT, "HLS s_axilite"),
        Item("scheduler", f"{AXI_DATA_WIDTH}-bit m_axi port (program fetch)",
             1, M_AXI_PORT, "the instruction fetch port (design.py)"),
        Item("scheduler", "dispatch queues", t.cores * len(config.UNITS), DISPATCH_QUEUE,
             "one per unit queue per core"),
        Item("scheduler", "fetch, decode, dependency tokens", 1, SCHEDULER_LOGIC, "estimated"),
        Item("scheduler", "control port", 1, CONTROL_PORT, "HLS s_axilite"),
    ]
    buffers = tuple(map_buffer(b) for b in t.buffers.values())
    notes = ("kernel logic only: the shell's static region (PCIe, XDMA, HBM memory subsystem) and "
             "the interconnect v++ adds are not counted",
             "no kernel has been through HLS or Vivado: per-unit costs are typical figures, LUT/FF "
             "good to about +-50%")
    return Estimate(t.name, t.cores, tuple(items), buffers, dequant_lanes, notes,
                    dict(t.device_capacity), t.slrs, t.name.upper())


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _n(value) -> str:
    return "n/r" if value is None else f"{value:,}"


def format_report(est: Estimate | None = None) -> str:
    """The estimate as text tables: per kernel, per buffer, totals beside the paper and the U280."""
    est = est or estimate()
    lines = [f"FlightLLM resource estimate, target {est.target} ({est.cores} cores, one per SLR; "
             f"from config, not synthesis)", ""]
    head = f"{'kernel':<12}{'inst':>5}" + "".join(f"{k:>11}" for k in RESOURCES)
    lines += ["Per kernel (all instances):", head, "-" * len(head)]
    for kernel in est.kernels:
        cost = est.kernel_cost(kernel).as_dict()
        lines.append(f"{kernel:<12}{est.instances(kernel):>5}"
                     + "".join(f"{cost[k]:>11,}" for k in RESOURCES))
    total = est.total.as_dict()
    lines.append(f"{'total':<17}" + "".join(f"{total[k]:>11,}" for k in RESOURCES))
    lines.append(f"{'paper (U280)':<17}" + "".join(f"{_n(PAPER_U280[k]):>11}" for k in RESOURCES))
    lines.append(f"{est.board + ' capacity':<17}"
                 + "".join(f"{_n(est.capacity[k]):>11}" for k in RESOURCES))
    use, slr = est.utilization(), est.slr_utilization()
    pct = lambda u: "n/r" if u is None else f"{u:.1%}"      # noqa: E731
    lines.append(f"{'utilisation':<17}" + "".join(f"{pct(use[k]):>11}" for k in RESOURCES))
    lines.append(f"{'busiest SLR':<17}" + "".join(f"{pct(slr[k]):>11}" for k in RESOURCES))
    lines += ["", "Items per instance:"]
    for item in est.items:
        c = item.cost
        lines.append(f"  {item.kernel:<10}{item.count:>5g} x {item.what:<56} DSP {c.dsp:>5g}  "
                     f"BRAM36 {c.bram:>3g}  LUT {c.lut:>8,.0f}  FF {c.ff:>8,.0f}  [{item.basis}]")
    lines += ["", "On-chip buffers per core (line bits x depth -> blocks; the other primitive in ()):"]
    for b in est.buffers:
        lines.append(f"  {b.name:<5} {b.kernel:<5} {b.bits:>6} b x {b.depth:>5} -> "
                     f"{b.blocks:>4} {b.primitive:<6} ({b.other_blocks} {b.other})  {b.reason}")
    lines += ["", "Per-op costs:"]
    for name, (cost, basis) in OPS.items():
        lines.append(f"  {name:<14} DSP {cost.dsp:>2g}  LUT {cost.lut:>5g}  FF {cost.ff:>5g}   {basis}")
    lines += ["", f"Verdict: {est.verdict()}",
              f"What if the memctrl dequantisers used DSPs (2 lanes per DSP48E2): "
              f"+{est.dequant_in_dsp_what_if():,} DSP -> {total['DSP'] + est.dequant_in_dsp_what_if():,}"
              f" of {_n(est.capacity['DSP'])}"]
    rtl = est.rtl_mpe_what_if()
    if rtl is not None:
        lines.append(f"What if every MPE were the RTL core as written (accumulator banks in fabric, "
                     f"Yosys): LUT {rtl['LUT']:,.0f} ({rtl['LUT %']:.0f}% of the device), FF "
                     f"{rtl['FF']:,.0f} ({rtl['FF %']:.0f}%)")
    lines += [f"Note: {n}" for n in est.notes]
    return "\n".join(lines)
