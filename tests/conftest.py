"""Shared fixtures: a tiny random LLaMA checkpoint, its compiled program, a simulated-U280 overlay."""
from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    from flightllm_overlay.model.testing import make_tiny_llama
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_folder):
    from flightllm_overlay.model import load_checkpoint
    return load_checkpoint(tiny_folder)


@pytest.fixture(scope="session")
def tiny_program(tiny_ckpt):
    from flightllm_overlay.compiler import compile_model
    return compile_model(tiny_ckpt, ctx=256)


@pytest.fixture(scope="session")
def sim_overlay():
    """One simulated U280 with the overlay loaded, shared by the tests (as one card would be)."""
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    return FlightLLMOverlay(device=SimulatedU280())


from hls_harness import csim  # noqa: E402,F401  the C-simulation build, once per session
