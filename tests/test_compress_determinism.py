"""Compression gives the same bytes whatever the CPU's vector unit: a pinned digest, and the same digest under a forced generic vector path."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: sha256 (first 16 hex digits) of the packed tensors of `compressed_tiny()`.  It changes only
#: when the compression's decisions change: update it deliberately, with the reason, then.
#: (f6ea997f59dd96c8 -> f18f764ad7e4e19a: the flightllm preset's smoothing alpha 0.5 -> 0.9;
#: -> a585f3609a7e0dbb: formats allocated by predicted loss (`allocation='fisher'`); with
#: `allocation='relative'` the digest is still f18f764ad7e4e19a; -> 980dca0e772d6af8: error
#: feedback in act order, `act_order=True`; -> ec234f34b87d240b: group parameters re-fitted by
#: least squares after the error feedback, `refit=True`; with `refit=False` still 980dca0e772d6af8;
#: -> 862774b0a3b14b3c: the dense linears' codes chosen for the exact group arithmetic,
#: `exact_groups=True`; with `exact_groups=False` still ec234f34b87d240b; -> 0a38da7e6621da73:
#: q/k's density met over each layer's q_proj and k_proj together, `qk_budget='layer'`; with
#: `qk_budget='linear'` still 862774b0a3b14b3c.)
PINNED = "0a38da7e6621da73"

#: a generic vector path on any x86-64 CPU: torch's default kernels (no AVX2/AVX-512), MKL
#: limited to SSE4.2 with its compatible branch, OpenBLAS's Prescott kernels -- other reduction
#: orders and other elementary-function code than the default path of this CPU
GENERIC = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
           "MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Prescott"}


def integer_tiny_checkpoint():
    """The tiny test model with weights from integer random draws (uniform, exact in float32):
    torch.randn itself differs between vector paths, so the model must not come from it."""
    import torch
    from flightllm_overlay.model import load_checkpoint
    from flightllm_overlay.model.testing import make_tiny_llama
    with tempfile.TemporaryDirectory() as tmp:        # loaded into memory: the folder can go
        ckpt = load_checkpoint(make_tiny_llama(Path(tmp) / "tiny", seed=0))
    rng = np.random.default_rng(0)
    for name in sorted(ckpt.weights):
        v = ckpt.weights[name]
        u = rng.integers(-2 ** 15, 2 ** 15, tuple(v.shape)) / 2.0 ** 15 * np.sqrt(3)   # std 1
        w = (1 + 0.1 * u if v.dim() == 1 else 0.2 * u if "embed" in name or "lm_head" in name
             else u * 1.5 / v.shape[1] ** 0.5)
        v.copy_(torch.from_numpy(w.astype(np.float32)))
    return ckpt


def compressed_tiny():
    from flightllm_overlay.compress import CompressionConfig, compress
    cfg = CompressionConfig.flightllm().but(name="det", avg_bits=5.5, calib_tokens=128,
                                            group_choices=(32,), qk_criterion="attention")
    return compress(integer_tiny_checkpoint(), None, cfg, progress=False)


def digest(cm) -> str:
    tensors, header = cm.tensors()
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).tobytes())
    return h.hexdigest()[:16]


def _digest_in_subprocess(env: dict) -> str:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_compress_determinism as t; "
            "print(t.digest(t.compressed_tiny()))")
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                         env={**os.environ, "PYTHONPATH": str(repo), **env},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def test_compressed_tiny_model_has_the_pinned_digest():
    assert digest(compressed_tiny()) == PINNED


def test_a_generic_vector_path_gives_the_same_bytes():
    assert _digest_in_subprocess(GENERIC) == PINNED
