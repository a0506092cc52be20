"""Our tests use the fixtures users get (flightllm_overlay.testing.pytest_plugin), plus the C-simulation build."""
from __future__ import annotations

# the same module the pytest11 entry point names, so an installed package does not register it twice
pytest_plugins = ["flightllm_overlay.testing.pytest_plugin"]

from hls_harness import csim  # noqa: E402,F401  the C-simulation build, once per session
