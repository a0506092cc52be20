"""The simulated Alveo U280: a pynq Device with register files per compute unit, device memory and the simulator.

`SimulatedU280` registers itself with pynq's Device metaclass, so `pynq.Overlay(path,
device=dev)` runs pynq's genuine path on it: `get_bitfile_metadata` (pynq's own XclBin parser),
`download` (which calls `post_download`), register access through `read_registers` /
`write_registers` (capability REGISTER_RW), `open_context` per CU and `get_memory` per bank.
No FPGA is involved: the xclbin it loads is read for metadata only.

Behaviour of the compute units (ap_ctrl_hs, see `hw/control.py`):

- AP_START on an mpe/misc/memctrl CU starts it: it waits for work from the scheduler.
- AP_START on the scheduler runs the program once every unit of every core has been started:
  synchronously, through `FunctionalSimulator(target).run(memory, program_addr, params,
  channel_base)`.  Until then the scheduler reports STALLED and never finishes, like hardware
  whose instruction FIFOs nobody drains; `soft_reset` (or starting the missing units) ends that.
- When the run ends, every CU shows AP_DONE|AP_IDLE|AP_READY and the counters are set.  A
  FlightLLMError from the simulator ends the run with status ERROR, error_code/core/pc set and
  the message kept for the driver (`last_error`); any other exception is a simulator bug: the
  device records INTERNAL and re-raises it.
"""
from __future__ import annotations

import os
import warnings
from collections import deque

with warnings.catch_warnings():       # pynq warns about the CPU on x86 at import: only that
    warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture",
                            category=ResourceWarning)
    from pynq.pl_server.xclbin_parser import XclBin

from ..device.base import U280Device, requested_device
from ..errors import AddressError, BitstreamError, FlightLLMError, IllegalInstructionError, ProgramError
from ..hw import control as C
from ..hw.design import kernel_vlnv
from ..hw.regfile import RegisterAccess, RegisterFile
from .counters import per_core_counters, run_counters
from .memory import DeviceMemory, SimMemoryBank
from .xclbin import build_xclbin, is_metadata_only, sim_device_name

__all__ = ["RegisterAccess", "SimulatedU280"]
_OUR_VLNVS = {kernel_vlnv(k) for k in ("scheduler", "mpe", "misc", "memctrl")}


def _default_simulator_factory(target):
    from .functional import FunctionalSimulator       # lazily: the simulator is heavy
    return FunctionalSimulator(target)


class SimulatedU280(U280Device):
    """A simulated Alveo U280 card running the FlightLLM design; no FPGA involved.

    Parameters
    ----------
    target : str or config.Target
        Hardware target whose block design the card carries (default ``u280``).
    simulator_factory : callable, optional
        ``factory(target)`` returning an object with ``run(memory, program_addr, params,
        channel_base)``; default `flightllm_overlay.sim.functional.FunctionalSimulator`.
    index : int
        Index used in the device tag.
    """

    bank_class = SimMemoryBank
    bank_where = "the simulated U280"
    bank_owner = "simulated"

    _probe_priority_ = 300
    is_simulated = True

    @classmethod
    def _probe_(cls):
        choice = requested_device()
        if choice == "card" or (choice == "auto" and _real_card_present()):
            return []
        return [cls()]

    def __init__(self, target="u280", simulator_factory=None, index: int = 0):
        super().__init__(f"{{name}}{index}", target)
        self.simulator_factory = simulator_factory or _default_simulator_factory
        self._simulator = None
        self.register_log = deque(maxlen=100_000)
        self._cus, self._last_error = {}, {}
        self.loaded_metadata_only = None
        fresh = XclBin(xclbin_data=bytearray(build_xclbin(self.design)))
        self.mem_dict, self.clock_dict = fresh.mem_dict, fresh.clock_dict
        self.memory = DeviceMemory.from_mem_dict(self.mem_dict)

    @property
    def name(self) -> str:
        return sim_device_name(self.design)

    def __repr__(self):
        return f"<SimulatedU280 {self.name}: simulated {self.target.board}, no FPGA>"

    def _not_loaded(self) -> str:
        return ("no design is loaded on the simulated U280: create the overlay with "
                "download=True, e.g. pynq.Overlay(path, device=dev)")

    # -- bitstream ---------------------------------------------------------------------------------
    def _load(self, data, path, parser) -> list:
        self._check_memories(parser)
        memory = DeviceMemory.from_mem_dict(parser.mem_dict)
        if memory.layout() != self.memory.layout():
            live = sum(len(b.allocations) for b in self.memory.banks.values())
            if live:
                raise BitstreamError(f"{path} has another memory topology and "
                                     f"{live} buffers are still allocated: free them first")
            self.memory = memory
        self._cus = {}
        for name, d in sorted(parser.ip_dict.items(), key=lambda kv: kv[1]["phys_addr"]):
            unit = self.design.cu(name) if d["type"] in _OUR_VLNVS else None
            self._cus[name] = RegisterFile(name, d["phys_addr"], d["addr_range"], unit,
                                           self._start, self._log, self._on_write)
        self.loaded_metadata_only = is_metadata_only(data)
        self._last_error.clear()
        return list(self._cus.values())

    def _check_memories(self, parser):
        for mem in self.design.memories:
            got = parser.mem_dict.get(mem.tag, {})
            if (got.get("base_address"), got.get("size"), bool(got.get("used"))) != \
                    (mem.base_address, mem.size, mem.used):
                raise BitstreamError(
                    f"{mem.tag} is at {got.get('base_address')} with {got.get('size')} bytes in "
                    f"this xclbin but at 0x{mem.base_address:x} with {mem.size} bytes in the "
                    f"design of target {self.target.name}: load an xclbin built for this target")

    # -- registers ---------------------------------------------------------------------------------
    def _log(self, access: RegisterAccess):
        self.register_log.append(access)

    def last_error(self, cu: str = "scheduler") -> str | None:
        """Message of the error that stopped the last run of `cu` (None if it did not fail)."""
        return self._last_error.get(cu)

    # -- memory ------------------------------------------------------------------------------------
    def _allocate(self, desc, nbytes):
        return self.memory.bank(desc["tag"]).allocate(nbytes)

    def free_buffer(self, alloc):
        alloc.bank.free(alloc)

    def bank_usage(self, tag: str) -> tuple:
        bank = self.memory.bank(tag)
        return len(bank.allocations), bank.bytes_used

    def _sync(self, alloc, offset, nbytes, to_device):
        DeviceMemory.sync(alloc, offset, nbytes, to_device)

    # -- compute units -----------------------------------------------------------------------------
    def _units(self):
        return [self._cus[u.instance] for c in range(self.design.cores) for u in self.design.units(c)
                if u.instance in self._cus]

    def _start(self, cu: RegisterFile):
        if cu.unit is None:                        # not ours: finishes at once
            cu.finish()
            return
        self._try_run()

    def _on_write(self, cu: RegisterFile, name: str, value: int) -> bool:
        if cu.name == "scheduler" and name == "soft_reset":
            if value & C.SOFT_RESET:
                self._soft_reset()
            return True                              # self-clearing: nothing stored
        return False

    def _try_run(self):
        sched = self._cus.get("scheduler")
        if sched is None or not sched.started or sched.get("status") == C.SchedulerStatus.RUNNING:
            return
        missing = [u for u in self._units() if not u.started]
        if len(self._units()) < 3 * self.design.cores:
            missing = missing or [None]
        if missing:
            sched.set("status", C.SchedulerStatus.STALLED)
            sched.set("error_code", C.ErrorCode.UNIT_NOT_STARTED)
            sched.set("error_core", missing[0].core if missing[0] else C.UNKNOWN)
            sched.set("error_pc", C.UNKNOWN)
            return
        self._run(sched)

    def _run(self, sched: RegisterFile):
        for name in ("error_code", "error_core", "error_pc", "cycles_lo", "cycles_hi",
                     "insns_lo", "insns_hi"):
            sched.set(name, 0)
        sched.set("status", C.SchedulerStatus.RUNNING)
        self._last_error.pop("scheduler", None)
        try:
            program = sched.get("program")
            instr = self.design.memory(self.design.scheduler.port("m_axi_instr").memory)
            if not instr.contains(program):
                raise AddressError(f"scheduler.program = 0x{program:x} is outside {instr.tag}, the "
                                   f"bank its port m_axi_instr is wired to: put the program in a "
                                   f"buffer allocated in {instr.tag}")
            channel_base = self._channel_base()
            if self._simulator is None:
                self._simulator = self.simulator_factory(self.target)
            counters = self._simulator.run(self.memory, program_addr=program,
                                           params={"pos": sched.get("pos"), "len": sched.get("len")},
                                           channel_base=channel_base)
        except FlightLLMError as exc:
            self._fail(sched, exc)
            return
        except Exception as exc:
            self._fail(sched, exc)
            raise
        self._store_counters(sched, counters)
        sched.set("status", C.SchedulerStatus.DONE)
        for cu in self._units() + [sched]:
            cu.finish()

    def _channel_base(self) -> dict:
        base = {}
        for c, channels in enumerate(self.design.core_channels):
            unit, cu = self.design.cu(f"memctrl_{c}"), self._cus[f"memctrl_{c}"]
            for k, channel in enumerate(channels):
                reg = unit.register(f"hbm{k}")
                ptr, mem = cu.get(reg.name), self.design.memory(unit.port(reg.port).memory)
                if mem.contains(ptr):
                    base[channel] = ptr
                elif ptr:
                    other = self.design.memory_at(ptr)
                    exc = AddressError(
                        f"memctrl_{c}.{reg.name} = 0x{ptr:x} lies in "
                        f"{other.tag if other else 'no memory bank'}, but port {reg.port} is wired "
                        f"to {mem.tag} (HBM channel {channel}): bind a buffer allocated in {mem.tag}")
                    exc.core, exc.pc = c, None
                    raise exc
        return base

    def _fail(self, sched: RegisterFile, exc: BaseException):
        code = (C.ErrorCode.ILLEGAL_INSTRUCTION if isinstance(exc, IllegalInstructionError) else
                C.ErrorCode.ADDRESS if isinstance(exc, AddressError) else
                C.ErrorCode.PROGRAM if isinstance(exc, ProgramError) else C.ErrorCode.INTERNAL)
        core, pc = getattr(exc, "core", None), getattr(exc, "pc", None)
        sched.set("status", C.SchedulerStatus.ERROR)
        sched.set("error_code", code)
        sched.set("error_core", C.UNKNOWN if core is None else int(core))
        sched.set("error_pc", C.UNKNOWN if pc is None else int(pc))
        self._last_error["scheduler"] = f"{type(exc).__name__}: {exc}"
        for cu in self._units() + [sched]:
            cu.finish()

    def _store_counters(self, sched: RegisterFile, counters):
        per_core = per_core_counters(counters, self.design.core_channels)
        run = run_counters(counters, self.design.core_channels)
        sched.set_counter("cycles", run.cycles)
        sched.set_counter("insns", run.instructions)
        for c, pc in enumerate(per_core):
            mpe, misc, mem = (self._cus[u.instance] for u in self.design.units(c))
            mpe.set_counter("insns", pc.mpe_instructions)
            mpe.set_counter("macs", pc.macs)
            mpe.set_counter("fixed_macs", pc.fixed_chain_macs)
            misc.set_counter("insns", pc.misc_instructions)
            misc.set_counter("elements", pc.misc_elements)
            mem.set_counter("bytes_read", pc.hbm_bytes_read)
            mem.set_counter("bytes_written", pc.hbm_bytes_written)

    def _soft_reset(self):
        for cu in self._cus.values():
            cu.reset(keep_args=True)
        self._last_error.clear()


def _real_card_present() -> bool:
    """True when XRT is sourced and a U280 answers (then, on `auto`, the simulator stays out)."""
    if not os.environ.get("XILINX_XRT"):
        return False
    from ..xrt.pyxrt_api import probe_cards          # lazily: only where XRT is installed
    return bool(probe_cards().found)
