"""Our tests use the fixtures users get (flightllm_overlay.testing.pytest_plugin), plus the C-simulation build."""
from __future__ import annotations

# the same module the pytest11 entry point names, so an installed package does not register it twice
pytest_plugins = ["flightllm_overlay.testing.pytest_plugin"]

from hls_harness import csim  # noqa: E402,F401  the C-simulation build, once per session

import dataclasses  # noqa: E402

import pytest  # noqa: E402


def staging_target(gbuf_bytes: int = 160 * 1024):
    """The U280 with a global buffer too small for the tiny LLaMA's 128-row prefill on chip
    (about 200 KB) but large enough for its staged plan: prefill steps are then staged."""
    from flightllm_overlay.config import load_target
    t = load_target("u280")
    bufs = dict(t.buffers)
    bufs["gbuf"] = dataclasses.replace(bufs["gbuf"], depth=gbuf_bytes // bufs["gbuf"].width)
    return t.with_overrides(buffers=bufs)


@pytest.fixture(scope="session")
def staged_program(tiny_ckpt):
    """The tiny LLaMA compiled for `staging_target()`: 128-row prefill launches staged through
    HBM (every logit row kept, for comparisons)."""
    from flightllm_overlay.compiler import compile_model
    return compile_model(tiny_ckpt, target=staging_target(), ctx=256, all_logits=True)
