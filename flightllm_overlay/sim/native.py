"""The simulator's native kernels: C++ beside this file, built once by the host's compiler into the cache, loaded with ctypes; None when unavailable.

The numpy functions of `spec/arithmetic.py` define the arithmetic.  The same arithmetic in C++
(`native_*.cpp`, which take the FP16 conversions and exp32 from the HLS kernels' own
`src/flightllm_fp.h`) runs a MISC instruction or an INT8 product in one call instead of tens of
numpy calls; tests hold every kernel equal, bit for bit, to its numpy definition.

The library is compiled on first use with ``$CXX`` (default ``g++``) into
``$FLIGHTLLM_CACHE/native/``, keyed by the sources, the compiler flags and the CPU (it is
built with ``-march=native``; ``-ffp-contract=off`` keeps one rounding per FP operation, so the
results do not depend on the CPU).  ``FLIGHTLLM_NATIVE=0`` turns it off (pure numpy);
``FLIGHTLLM_NATIVE=1`` makes a failed build an error instead of a warning.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
import weakref
from pathlib import Path

from ..errors import FlightLLMError

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"                 # flightllm_fp.h, flightllm_hw.h: the HLS kernels' own
SOURCES = ("native_misc.cpp", "native_mpe.cpp")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
         "-Wno-unknown-pragmas", "-Wno-unused-label",
         "-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden")
BUILD_TIMEOUT_S = 300

_state: dict = {}
_lock = threading.Lock()


class NativeBuildError(FlightLLMError):
    """The native kernels could not be built although FLIGHTLLM_NATIVE=1 asks for them."""


def _cpu_fingerprint() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def _key(cxx: str) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((HERE / name).read_bytes())
    for name in ("flightllm_fp.h", "flightllm_hw.h"):
        h.update((SRC / name).read_bytes())
    h.update(" ".join((cxx,) + FLAGS).encode())
    h.update(_cpu_fingerprint().encode())
    return h.hexdigest()[:20]


def _start_build(cxx: str, out: Path):
    """Start compiling the library into `out` (a temporary name first, renamed when done)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".tmp.so", prefix=out.stem + ".", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *FLAGS, f"-I{SRC}", "-o", tmp, *(str(HERE / s) for s in SOURCES)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, tmp, out, cmd


def _finish_build(build) -> None:
    proc, tmp, out, cmd = build
    try:
        try:
            _, err = proc.communicate(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"{cmd[0]} took over {BUILD_TIMEOUT_S} s") from None
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
        os.replace(tmp, out)                    # atomic: concurrent builders agree
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cxx() -> str:
    return os.environ.get("CXX", "g++")


def _begin(cxx: str, path: Path) -> None:
    """Start building the library at `path` when it is not built and no build is running."""
    if "build" not in _state and not path.exists():
        _state["build"] = _start_build(cxx, path)


def prepare() -> None:
    """Start building the library in the background when it is not built yet (a cold
    `flightllm generate` calls this before compiling the model, so both run at once)."""
    if "lib" in _state or os.environ.get("FLIGHTLLM_NATIVE", "") == "0" \
            or shutil.which(_cxx()) is None:
        return                                  # library() reports a missing compiler
    try:
        _begin(_cxx(), _path(_cxx()))
    except OSError:
        pass                                    # library() starts it again and reports it


def _path(cxx: str) -> Path:
    from ..paths import default_cache_dir
    return default_cache_dir() / "native" / f"kernels-{_key(cxx)}.so"


def library():
    """The loaded kernel library (ctypes.CDLL), or None when turned off or not buildable."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" not in _state:
            _load()
    return _state["lib"]


def _load() -> None:
    mode = os.environ.get("FLIGHTLLM_NATIVE", "").strip()
    lib, why = None, "turned off by FLIGHTLLM_NATIVE=0"
    if mode != "0":
        cxx = _cxx()
        try:
            if shutil.which(cxx) is None:
                raise RuntimeError(f"no C++ compiler `{cxx}` on PATH (install g++, or set CXX)")
            path = _path(cxx)
            _begin(cxx, path)
            build = _state.pop("build", None)
            if build is not None:
                _finish_build(build)
            lib = ctypes.CDLL(str(path))
            why = str(path)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            if mode == "1":
                raise NativeBuildError(f"the simulator's native kernels are not available "
                                       f"({why}); unset FLIGHTLLM_NATIVE to run on numpy") from exc
            warnings.warn(f"flightllm_overlay: the simulator runs on numpy alone, several times "
                          f"slower, because its native kernels could not be built ({why}); "
                          f"install g++ (or set CXX) to build them", RuntimeWarning, stacklevel=3)
    _state["lib"], _state["why"] = lib, why


def functions(signatures: dict):
    """{name: ctypes function returning int} of the library with these argument types set
    (once per loaded library), or None when the library is unavailable."""
    lib = library()
    if lib is None:
        return None
    bound = _state.setdefault("functions", {}).get(id(signatures))
    if bound is None:
        bound = {}
        for name, argtypes in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
            bound[name] = fn
        _state["functions"][id(signatures)] = bound
    return bound


_ADDRESSES: dict = {}    # id(array) -> (weak reference to the array, address of its first byte)


def address(x) -> int:
    """The address of numpy array x's first byte (cached: the simulator's buffers, snapshots and
    operand views live long and are asked for again at every instruction)."""
    hit = _ADDRESSES.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1]
    if len(_ADDRESSES) > 100_000:
        _ADDRESSES.clear()
    addr = x.ctypes.data
    _ADDRESSES[id(x)] = (weakref.ref(x), addr)
    return addr


def status() -> str:
    """One line for `flightllm info`: where the kernels were loaded from, or why not."""
    lib = library()
    return f"native kernels: {_state['why']}" if lib else f"numpy only ({_state['why']})"


def reset() -> None:
    """Forget the loaded library (tests: after changing FLIGHTLLM_NATIVE)."""
    _state.clear()
