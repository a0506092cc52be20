"""Start-up hook run by flightllm_overlay_pynq.pth (installed as _flightllm_overlay_pynq_hook): pynq sees flightllm_overlay in processes that never import it.

Python runs the ``.pth`` file's import line at every start, so this module imports only what
the interpreter has already loaded.  It waits for ``import pynq``; right after pynq's package
runs it imports ``flightllm_overlay`` (whose ``pynq_plugin.install()`` then adds the simulated
U280 to pynq's device list and lets ``pynq.Overlay("flightllm.xclbin")`` return a
FlightLLMOverlay).  This is what makes ``pynq get-notebooks flightllm`` work on a machine whose
only device is the simulated one.  Processes that never import pynq pay nothing more.
"""
import importlib.machinery
import sys


class _AfterPynq:
    """Loader wrapper: runs pynq's package, then imports flightllm_overlay."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader   # pynq sees its own loader
        self.loader.exec_module(module)
        try:
            import flightllm_overlay  # noqa: F401  its __init__ installs the pynq plugin
        except Exception as exc:           # a broken install must not break pynq itself
            print(f"flightllm_overlay: pynq plugin not installed ({exc})", file=sys.stderr)


class _PynqFinder:
    """Meta path finder that finds nothing itself: it wraps the loader of the `pynq` package once."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "pynq":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _AfterPynq(spec.loader)
        return spec


if "pynq" not in sys.modules and not any(isinstance(f, _PynqFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _PynqFinder())
