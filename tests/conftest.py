"""Our tests use the fixtures users get (flightllm_overlay.testing.pytest_plugin), plus the C-simulation build."""
from __future__ import annotations

# the same module the pytest11 entry point names, so an installed package does not register it twice
pytest_plugins = ["flightllm_overlay.testing.pytest_plugin"]

from hls_harness import csim  # noqa: E402,F401  the C-simulation build, once per session

import pytest  # noqa: E402
from staged_target import staging_target  # noqa: E402


@pytest.fixture(scope="session")
def staged_program(tiny_ckpt):
    """The tiny LLaMA compiled for `staging_target()`: 128-row prefill launches staged through
    HBM (every logit row kept, for comparisons)."""
    from flightllm_overlay.compiler import compile_model
    return compile_model(tiny_ckpt, target=staging_target(), ctx=256, all_logits=True)
