"""flightllm_overlay: FlightLLM-style LLM inference on FPGAs: compiler, PYNQ overlay, simulated U280.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set or torch is already
imported: torch (which the package imports only to compile or compress) runs OpenMP threads
that spin while they wait, and spinning threads starve when another process holds a core, so a
cold `flightllm generate` took 27-29 s instead of 14-15 s on two shared cores
(docs/fast_simulator.md).  Sleeping waits change no result; on free cores they cost a thread
wake-up per parallel region (calibration has a few hundred).  Set the variable yourself to choose
otherwise.
"""
import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import load_target  # noqa: E402
from .errors import FlightLLMError  # noqa: E402
from .pynq_plugin import install as _install_pynq_plugin  # noqa: E402

_install_pynq_plugin()       # pynq.Overlay("flightllm.xclbin") -> FlightLLMOverlay; see pynq_plugin

__version__ = "0.1.0"

_LAZY = {
    "FlightLLMOverlay": ("overlay", "FlightLLMOverlay"),
    "Generator": ("runtime", "Generator"),
    "Session": ("runtime", "Session"),
    "SamplingParams": ("runtime", "SamplingParams"),
    "compile_model": ("compiler", "compile_model"),
    "Program": ("compiler", "Program"),
    "load_checkpoint": ("model", "load_checkpoint"),
}


def __getattr__(name):
    """Heavy parts (pynq, torch) load on first use, so `import flightllm_overlay` stays light."""
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'flightllm_overlay' has no attribute {name!r}")


__all__ = ["FlightLLMError", "load_target", "__version__", *_LAZY]
