"""flightllm_overlay: FlightLLM-style LLM inference on FPGAs: compiler, PYNQ overlay, simulated U280."""
from .config import load_target
from .errors import FlightLLMError
from .pynq_plugin import install as _install_pynq_plugin

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
