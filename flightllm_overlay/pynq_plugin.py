"""How flightllm_overlay plugs into pynq: our devices in pynq's list, and pynq.Overlay returning ours.

pynq has entry points for overlay files (``pynq.overlays``), drivers (``pynq.lib``) and notebooks
(``pynq.notebooks``) but none for devices or overlay classes:

- **Devices.** pynq lists the devices of the `Device` subclasses that exist when
  ``pynq.Device.devices`` is first read; a class exists only once its module is imported.  So the
  simulated U280 (and the XRT U280 driver) must be imported, or stood in for, before that.
- **Overlay class.** ``pynq.Overlay(path)`` always builds a plain `pynq.Overlay`: pynq has no
  registry mapping a bitstream to a subclass.  Python does let a class's ``__new__`` return an
  instance of a subclass, and then runs *that* class's ``__init__`` with the same arguments;
  that is the one hook used here: ``pynq.Overlay.__new__`` returns an uninitialised
  `FlightLLMOverlay` when the file is named ``flightllm*.xclbin``, and the instance is built by
  `FlightLLMOverlay.__init__`.  Every other file, and every subclass of pynq.Overlay, is
  untouched.

`install()` does both as soon as pynq's modules are loaded: at once if pynq is already imported,
else from an import hook that runs right after ``pynq.pl_server.device`` / ``pynq.overlay``
execute (nothing heavy is imported until pynq is).  ``import flightllm_overlay`` calls it; in an
installed package, ``flightllm_overlay_pynq.pth`` imports flightllm_overlay right after any
``import pynq`` (see ``_flightllm_overlay_pynq_hook``), so that ``pynq get-notebooks`` finds the
simulated device in a process that never imports us.

The explicit spelling needs none of this: ``from flightllm_overlay import FlightLLMOverlay;
ol = FlightLLMOverlay()``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys

#: the file names pynq.Overlay hands to FlightLLMOverlay: flightllm.xclbin, flightllm.<shell>.xclbin
FLIGHTLLM_XCLBIN = re.compile(r"^flightllm(\.[^/\\]+)?\.xclbin$")
#: probe priority of the stand-in device class: after XrtU280 (250), before SimulatedU280 (300)
_STAND_IN_PRIORITY = 299
_WATCHED = ("pynq.pl_server.device", "pynq.overlay")


def names_flightllm_xclbin(bitfile_name) -> bool:
    """True when `bitfile_name` (a name or a path) names a FlightLLM xclbin."""
    return isinstance(bitfile_name, str) and bool(FLIGHTLLM_XCLBIN.match(os.path.basename(bitfile_name)))


# -- devices -------------------------------------------------------------------------------------
def _register_device_stand_in(device_module) -> None:
    """Add a Device class whose probe imports our device drivers, so pynq lists them."""
    Device, meta = device_module.Device, device_module.DeviceMeta
    if any(getattr(c, "_flightllm_stand_in", False) for c in meta._subclasses.values()):
        return

    def _probe_(cls):
        ours = ("SimulatedU280", "XrtU280")
        before = {c.__name__ for c in meta._subclasses.values()}
        from .overlay import FlightLLMOverlay  # noqa: F401  imports and registers both classes
        found = []
        for key in sorted(meta._subclasses):
            klass = meta._subclasses[key]
            if klass.__name__ in ours and klass.__name__ not in before:
                found.extend(klass._probe_())      # registered during this probe: pynq's loop
        return found                                # has its keys already and would skip them

    attrs = {"__doc__": "Stand-in that lists flightllm_overlay's devices (see pynq_plugin).",
             "__module__": __name__, "_probe_priority_": _STAND_IN_PRIORITY,
             "_flightllm_stand_in": True, "_probe_": classmethod(_probe_)}
    meta("FlightLLMDevices", (Device,), attrs)


# -- pynq.Overlay -> FlightLLMOverlay --------------------------------------------------------------
def _check_pynq_arguments(args, kwargs) -> None:
    """Refuse pynq.Overlay arguments that FlightLLMOverlay.__init__ would bind differently."""
    from .errors import BitstreamError
    if len(args) > 1:
        raise BitstreamError(
            "pynq.Overlay('flightllm...xclbin', ...) builds a FlightLLMOverlay, whose second "
            "positional parameter is not pynq's dtbo: pass download=, ignore_version=, device= "
            "by keyword")
    if "dtbo" in kwargs:
        raise BitstreamError("a FlightLLM xclbin runs on an Alveo card and has no device-tree "
                             "overlay: leave dtbo out")
    if "gen_cache" in kwargs:
        raise BitstreamError("FlightLLMOverlay keeps no pickled metadata cache: leave gen_cache "
                             "out (download=False loads the metadata without programming)")


def _patch_overlay(overlay_module) -> None:
    """Make pynq.Overlay('flightllm*.xclbin') return an uninitialised FlightLLMOverlay."""
    base = overlay_module.Overlay
    if getattr(base.__new__, "_flightllm", False):
        return

    def __new__(cls, *args, **kwargs):
        name = args[0] if args else kwargs.get("bitfile_name")
        if cls is base and names_flightllm_xclbin(name):
            _check_pynq_arguments(args, kwargs)
            from .overlay import FlightLLMOverlay
            return object.__new__(FlightLLMOverlay)   # Python then runs FlightLLMOverlay.__init__
        return object.__new__(cls)

    __new__._flightllm = True
    base.__new__ = __new__


_ACTIONS = {"pynq.pl_server.device": _register_device_stand_in, "pynq.overlay": _patch_overlay}


# -- running the actions when pynq's modules load --------------------------------------------------
class _AfterExec(importlib.abc.Loader):
    """Loader wrapper: executes the module, then our action on it."""

    def __init__(self, loader, action):
        self.loader, self.action = loader, action

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader   # the module sees its own loader
        self.loader.exec_module(module)
        self.action(module)


class _PynqWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loaders of the pynq modules we act on."""

    def find_spec(self, fullname, path, target=None):
        action = _ACTIONS.get(fullname)
        if action is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _AfterExec(spec.loader, action)
        return spec


def install() -> None:
    """Apply the actions to pynq modules already loaded, and watch for the others."""
    pending = False
    for name in _WATCHED:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__spec__", None) is not None and \
                hasattr(module, "Device" if name.endswith("device") else "Overlay"):
            _ACTIONS[name](module)
        else:
            pending = True
    if pending and not any(isinstance(f, _PynqWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _PynqWatcher())
