"""Block design of the accelerator (compute units, register maps, AXI ports, memories, clocks), from config.

One description feeds the metadata-only xclbin of the simulated U280 (`sim/xclbin.py`), the
simulated device's register files, the drivers' register offsets and, later, the Vitis link
configuration and the kernels' C header.  Every count and size comes from the `Target`; the only
numbers written here are the platform's address map and the Vitis HLS register layout rules.

Compute units (one HLS kernel may have several instances, one per core)::

    scheduler            fetches the program from DDR and dispatches it to every core's units
    mpe_<c>, c < cores   matrix processing engine of core c
    misc_<c>             MISC (special function) unit of core c
    memctrl_<c>          core c: its on-chip buffers, one m_axi port per HBM pseudo-channel it
                         owns, the unit queues; issues LD/ST itself, MM/MV through mpe_<c>,
                         MISC through misc_<c>

Every link between compute units is an AXI4-Stream (`Stream`, v++ ``stream_connect``): the
scheduler's cmd/done pair with each core, each core's MPE and MISC links, and each pair of cores'
remote-read links (docs/hls_kernels.md; the MPE beats: docs/mpe_stream.md).

Register layout (Vitis HLS, ap_ctrl_hs): 0x00 CTRL, 0x04 GIE, 0x08 IER, 0x0C ISR; arguments from
0x10 in declaration order, each taking its data words (one for 32 bits, two for 64, low word
first) followed by one reserved word.  Read-only registers are kernel outputs; host writes to
them are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .. import config
from ..errors import ConfigError
from .control import ARGS_BASE

# ---------------------------------------------------------------------------------------------
# Platform facts (xilinx_u280 shell address map) and naming rules
# ---------------------------------------------------------------------------------------------
VENDOR, LIBRARY, KERNEL_VERSION = "flightllm", "hls", "1.0"
HBM_BASE = 0x0                  # HBM[k] starts at HBM_BASE + k * channel size
DDR_BASE = 0x40_0000_0000       # DDR[0]; DDR[i] at DDR_BASE + i * DDR_STRIDE
DDR_STRIDE = 0x10_0000_0000
CU_BASE = 0x0180_0000           # control port of the first compute unit
CU_STRIDE = 0x1_0000            # address window of one compute unit's control port
CONTROL_PORT = "s_axi_control"
AXI_DATA_WIDTH = 512            # bits, every m_axi port
#: adder trees per MPE that sum a row's activations per weight group for an MPE on codes (ISA
#: `wcodes`, 16 channels a cycle each); the timing and resource models read it
CODE_SUM_TREES = 16
KERNELS = ("scheduler", "mpe", "misc", "memctrl")


def kernel_vlnv(kernel: str) -> str:
    """VLNV of one of our HLS kernels, e.g. ``flightllm:hls:mpe:1.0``."""
    return f"{VENDOR}:{LIBRARY}:{kernel}:{KERNEL_VERSION}"


def hbm_tag(channel: int) -> str:
    return f"HBM[{channel}]"


def ddr_tag(bank: int) -> str:
    return f"DDR[{bank}]"


# ---------------------------------------------------------------------------------------------
# Description types
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Register:
    """One s_axilite argument register of a compute unit."""

    name: str
    offset: int                  # byte offset from the CU's base address
    bits: int                    # 32, or 64 (two words, low word first)
    access: str                  # "rw" host-written argument, "ro" kernel output
    ctype: str                   # C type of the HLS argument
    description: str
    arg_id: int                  # argument index of the kernel (xclbin `id`)
    port: str | None = None      # m_axi port that a pointer argument addresses

    @property
    def is_pointer(self) -> bool:
        return self.port is not None

    @property
    def words(self) -> int:
        return self.bits // 32


@dataclass(frozen=True)
class MasterPort:
    """An m_axi port of a compute unit and the memory bank it is wired to."""

    name: str
    memory: str                  # memory tag, e.g. "HBM[4]"
    data_width: int = AXI_DATA_WIDTH


@dataclass(frozen=True)
class StreamPort:
    """An AXI4-Stream port (``#pragma HLS INTERFACE mode = axis``) of a compute unit."""

    name: str
    direction: str               # "in" (the kernel reads it) or "out"
    width: int = AXI_DATA_WIDTH  # TDATA bits (plus TLAST)


@dataclass(frozen=True)
class Stream:
    """One kernel-to-kernel AXI4-Stream connection (v++ --connectivity.sc / stream_connect)."""

    src: str                     # instance of the producer
    src_port: str
    dst: str                     # instance of the consumer
    dst_port: str

    @property
    def vpp(self) -> str:
        return f"{self.src}.{self.src_port}:{self.dst}.{self.dst_port}"


@dataclass(frozen=True)
class ComputeUnit:
    """One instance of an HLS kernel on the block design."""

    kernel: str                  # HLS kernel name: scheduler | mpe | misc | memctrl
    instance: str                # CU name, the key in pynq's ip_dict: "mpe_0"
    core: int | None             # core the unit belongs to (None: the scheduler)
    base_address: int
    registers: tuple
    ports: tuple = ()
    streams: tuple = ()          # StreamPort, in argument order (after the registers)
    control: str = "ap_ctrl_hs"
    address_range: int = CU_STRIDE

    @property
    def vlnv(self) -> str:
        return kernel_vlnv(self.kernel)

    @property
    def cu_name(self) -> str:
        return f"{self.kernel}:{self.instance}"

    def register(self, name: str) -> Register:
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise ConfigError(f"compute unit {self.instance} has no register {name!r}; it has "
                          f"{[r.name for r in self.registers]}")

    def stream(self, name: str) -> StreamPort:
        for port in self.streams:
            if port.name == name:
                return port
        raise ConfigError(f"compute unit {self.instance} has no AXI4-Stream port {name!r}; it has "
                          f"{[p.name for p in self.streams]}")

    def port(self, name: str) -> MasterPort:
        for port in self.ports:
            if port.name == name:
                return port
        raise ConfigError(f"compute unit {self.instance} has no m_axi port {name!r}")

    @property
    def map_size(self) -> int:
        """Bytes of the register map actually used (up to the end of the last reserved word)."""
        last = self.registers[-1] if self.registers else None
        return ARGS_BASE if last is None else last.offset + 4 * (last.words + 1)


@dataclass(frozen=True)
class Memory:
    """A memory bank of the platform."""

    tag: str                     # xclbin tag: "HBM[3]", "DDR[0]"
    kind: str                    # "HBM" or "DDR4" (pynq's mem_dict type names)
    index: int                   # channel or bank number
    base_address: int
    size: int                    # bytes
    used: bool                   # wired to at least one compute unit

    @property
    def attr_name(self) -> str:
        """Name of the bank as an overlay attribute (pynq strips the brackets): ``HBM3``."""
        return self.tag.replace("[", "").replace("]", "")

    def contains(self, address: int, nbytes: int = 1) -> bool:
        return self.base_address <= address and address + nbytes <= self.base_address + self.size


@dataclass(frozen=True)
class Clock:
    name: str
    mhz: float
    kind: str                    # DATA | KERNEL | SYSTEM (xclbin clock types)
    description: str


@dataclass(frozen=True)
class BlockDesign:
    """Everything the host can see of the accelerator: CUs, their registers, wiring, memories."""

    target: str
    platform: str
    cores: int
    core_channels: tuple         # core c owns HBM pseudo-channels core_channels[c]
    instruction_memory: str      # tag of the DDR bank holding programs
    compute_units: tuple
    memories: tuple
    clocks: tuple
    streams: tuple = ()          # Stream connections between compute units

    def cu(self, instance: str) -> ComputeUnit:
        for unit in self.compute_units:
            if unit.instance == instance:
                return unit
        raise ConfigError(f"the block design has no compute unit {instance!r}; it has "
                          f"{[u.instance for u in self.compute_units]}")

    @property
    def scheduler(self) -> ComputeUnit:
        return self.cu("scheduler")

    def units(self, core: int) -> tuple:
        """(mpe, misc, memctrl) compute units of one core."""
        return tuple(self.cu(f"{k}_{core}") for k in ("mpe", "misc", "memctrl"))

    def memory(self, tag: str) -> Memory:
        for mem in self.memories:
            if mem.tag == tag or mem.attr_name == tag:
                return mem
        raise ConfigError(f"the block design has no memory bank {tag!r}; banks are "
                          f"{[m.tag for m in self.memories]}")

    def memory_at(self, address: int) -> Memory | None:
        for mem in self.memories:
            if mem.contains(address):
                return mem
        return None

    def channel_port(self, channel: int) -> tuple:
        """(memctrl CU, argument register) that addresses HBM pseudo-channel `channel`."""
        for core, channels in enumerate(self.core_channels):
            if channel in channels:
                unit = self.cu(f"memctrl_{core}")
                return unit, unit.register(f"hbm{channels.index(channel)}")
        owned = sorted(c for chs in self.core_channels for c in chs)
        raise ConfigError(f"HBM pseudo-channel {channel} is not owned by any core; "
                          f"owned channels are {owned}")


# ---------------------------------------------------------------------------------------------
# Construction from the target
# ---------------------------------------------------------------------------------------------
def _layout(args) -> tuple:
    """Place arguments (name, bits, access, ctype, description, port) in Vitis HLS order."""
    regs, offset = [], ARGS_BASE
    for arg_id, (name, bits, access, ctype, description, port) in enumerate(args):
        regs.append(Register(name, offset, bits, access, ctype, description, arg_id, port))
        offset += 4 * (bits // 32 + 1)
    return tuple(regs)


def _counter(name: str, what: str) -> list:
    return [(f"{name}_lo", 32, "ro", "unsigned int", f"{what}, bits 31..0", None),
            (f"{name}_hi", 32, "ro", "unsigned int", f"{what}, bits 63..32", None)]


def _scheduler_args() -> list:
    u32 = "unsigned int"
    return ([("program", 64, "rw", "void*", "device address of the program image (DDR)",
              "m_axi_instr"),
             ("pos", 32, "rw", u32, "run-time parameter P: position of the first token", None),
             ("len", 32, "rw", u32, "run-time parameter L: number of tokens of this run", None),
             ("status", 32, "ro", u32, "SchedulerStatus of the last start", None),
             ("error_code", 32, "ro", u32, "ErrorCode when status is ERROR or STALLED", None),
             ("error_core", 32, "ro", u32, "core of the error (0xFFFFFFFF: unknown)", None),
             ("error_pc", 32, "ro", u32, "instruction index of the error (0xFFFFFFFF: unknown)",
              None)]
            + _counter("cycles", "kernel clock cycles of the last run")
            + _counter("insns", "instructions dispatched in the last run, all cores")
            + [("soft_reset", 32, "rw", u32, "write 1: abort and return every CU to idle", None)])


def _memctrl_args(n_ports: int) -> list:
    ptrs = [(f"hbm{k}", 64, "rw", "void*", f"device address of the core's k={k} HBM "
             f"pseudo-channel buffer", f"m_axi_hbm{k}") for k in range(n_ports)]
    return (ptrs + _counter("bytes_read", "bytes read from HBM in the last run")
            + _counter("bytes_written", "bytes written to HBM in the last run"))


def _stream_ports(kernel: str, cores: int) -> tuple:
    """The AXI4-Stream arguments of a kernel, in argument order (see the kernel sources)."""
    if kernel == "scheduler":
        return tuple([StreamPort(f"cmd{c}", "out") for c in range(cores)]
                     + [StreamPort(f"done{c}", "in") for c in range(cores)])
    if kernel == "mpe":
        return (StreamPort("op", "in"), StreamPort("res", "out"))
    if kernel == "misc":
        return (StreamPort("op", "in"), StreamPort("req", "out"))
    ports = [StreamPort("cmd", "in"), StreamPort("done", "out"), StreamPort("mpe_op", "out"),
             StreamPort("mpe_res", "in"), StreamPort("misc_op", "out"), StreamPort("misc_req", "in")]
    for p in range(cores - 1):                 # peer p of core c is core (c + 1 + p) % cores
        ports += [StreamPort(f"peer{p}_req_out", "out"), StreamPort(f"peer{p}_req_in", "in"),
                  StreamPort(f"peer{p}_data_out", "out"), StreamPort(f"peer{p}_data_in", "in")]
    return tuple(ports)


def _streams(cores: int) -> tuple:
    """Every connection: scheduler <-> each core, each core's MPE and MISC, core <-> core."""
    out = []
    for c in range(cores):
        out += [Stream("scheduler", f"cmd{c}", f"memctrl_{c}", "cmd"),
                Stream(f"memctrl_{c}", "done", "scheduler", f"done{c}"),
                Stream(f"memctrl_{c}", "mpe_op", f"mpe_{c}", "op"),
                Stream(f"mpe_{c}", "res", f"memctrl_{c}", "mpe_res"),
                Stream(f"memctrl_{c}", "misc_op", f"misc_{c}", "op"),
                Stream(f"misc_{c}", "req", f"memctrl_{c}", "misc_req")]
    for c in range(cores):
        for p in range(cores - 1):
            peer = (c + 1 + p) % cores
            q = (c - peer - 1) % cores             # c is peer q of `peer`
            out += [Stream(f"memctrl_{c}", f"peer{p}_req_out", f"memctrl_{peer}", f"peer{q}_req_in"),
                    Stream(f"memctrl_{c}", f"peer{p}_data_out", f"memctrl_{peer}", f"peer{q}_data_in")]
    return tuple(out)


def _memories(t: config.Target, used: set) -> tuple:
    hbm = [Memory(hbm_tag(k), "HBM", k, HBM_BASE + k * t.hbm_channel_bytes, t.hbm_channel_bytes,
                  hbm_tag(k) in used) for k in range(t.hbm_channels)]
    if DDR_BASE < HBM_BASE + t.hbm_channels * t.hbm_channel_bytes or DDR_STRIDE < t.ddr_bank_bytes:
        raise ConfigError(f"target {t.name}: HBM or DDR sizes do not fit the platform address map "
                          f"in hw/design.py (DDR at 0x{DDR_BASE:x}, 0x{DDR_STRIDE:x} apart)")
    ddr = [Memory(ddr_tag(b), "DDR4", b, DDR_BASE + b * DDR_STRIDE, t.ddr_bank_bytes,
                  ddr_tag(b) in used) for b in range(t.ddr_banks)]
    return tuple(hbm + ddr)


def build_design(t: config.Target) -> BlockDesign:
    """Block design of target `t` (see the module docstring for its shape)."""
    widths = {len(chs) for chs in t.core_channels}
    if len(widths) != 1:
        raise ConfigError(f"target {t.name}: every core must own the same number of HBM "
                          f"pseudo-channels (one memctrl kernel serves them all): {t.core_channels}")
    if not 0 <= t.instruction_bank < t.ddr_banks:
        raise ConfigError(f"target {t.name}: instruction_bank {t.instruction_bank} is not one of "
                          f"the {t.ddr_banks} DDR banks")
    instr, n_ports = ddr_tag(t.instruction_bank), widths.pop()
    specs = [("scheduler", None, _scheduler_args(), {"m_axi_instr": instr})]
    for c in range(t.cores):
        specs.append(("mpe", c, _counter("insns", "MM/MV instructions executed")
                      + _counter("macs", "multiply-accumulates performed (kept weights)")
                      + _counter("fixed_macs", "MAC slots a fixed dense chain would spend on the "
                                               "same work (sparse blocks counted dense)"), {}))
        specs.append(("misc", c, _counter("insns", "MISC instructions executed")
                      + _counter("elements", "elements processed"), {}))
        specs.append(("memctrl", c, _memctrl_args(n_ports),
                      {f"m_axi_hbm{k}": hbm_tag(ch) for k, ch in enumerate(t.core_channels[c])}))
    units = []
    for i, (kernel, core, args, wiring) in enumerate(specs):
        name = kernel if core is None else f"{kernel}_{core}"
        ports = tuple(MasterPort(p, mem) for p, mem in wiring.items())
        units.append(ComputeUnit(kernel, name, core, CU_BASE + i * CU_STRIDE, _layout(args), ports,
                                 _stream_ports(kernel, t.cores)))
    used = {p.memory for u in units for p in u.ports}
    clocks = (Clock("DATA_CLK", t.clock_mhz, "DATA", "ap_clk of every compute unit"),)
    return BlockDesign(t.name, t.platform, t.cores, t.core_channels, instr, tuple(units),
                       _memories(t, used), clocks, _streams(t.cores))


@lru_cache(maxsize=None)
def block_design(target: str = "u280") -> BlockDesign:
    """Block design of a named target (cached)."""
    return build_design(config.load_target(target))
