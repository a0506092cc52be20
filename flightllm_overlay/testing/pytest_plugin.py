"""pytest plugin: fixtures for testing code against the simulated U280 (a tiny model, its program, an overlay).

Installed with the package (entry point ``pytest11``), so in any project that has
flightllm_overlay installed a test can ask for these fixtures by name::

    def test_my_code_answers(tiny_generator):
        assert tiny_generator.generate_text("hello", 4, temperature=0.0, stop_ids=())

``tiny_folder``, ``tiny_ckpt``, ``tiny_program``, ``sim_overlay`` (and ``tiny_opt_folder``,
``tiny_opt_ckpt`` of the OPT family) are built once per test session (a tiny model compiles in about a second); ``tiny_generator`` is a fresh Session and
Generator per test on the shared overlay, closed afterwards.  Everything runs on the simulated
U280 whether or not a card is present.  The model is random (3 layers, a 300-token vocabulary):
it writes gibberish, deterministically.  Disable the plugin with ``-p
no:flightllm_overlay.testing.pytest_plugin``.
"""
from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message="Pynq does not support the CPU Architecture")

#: context length of the compiled tiny program: the tiny model's own maximum
TINY_CTX = 256


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A Hugging Face folder (weights + tokenizer) of a deterministic random tiny LLaMA."""
    from flightllm_overlay.model.testing import make_tiny_llama
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_folder):
    """The tiny LLaMA loaded as a Checkpoint (args, weights, tokenizer)."""
    from flightllm_overlay.model import load_checkpoint
    return load_checkpoint(tiny_folder)


@pytest.fixture(scope="session")
def tiny_opt_folder(tmp_path_factory):
    """The same for a deterministic random tiny OPT (the other model family)."""
    from flightllm_overlay.model.testing import make_tiny_opt
    return make_tiny_opt(tmp_path_factory.mktemp("tiny") / "tiny-opt", seed=0)


@pytest.fixture(scope="session")
def tiny_opt_ckpt(tiny_opt_folder):
    """The tiny OPT loaded as a Checkpoint."""
    from flightllm_overlay.model import load_checkpoint
    return load_checkpoint(tiny_opt_folder)


@pytest.fixture(scope="session")
def tiny_program(tiny_ckpt):
    """The tiny LLaMA compiled (W8A8) for the U280 target at context TINY_CTX."""
    from flightllm_overlay.compiler import compile_model
    return compile_model(tiny_ckpt, ctx=TINY_CTX)


@pytest.fixture(scope="session")
def sim_overlay():
    """One FlightLLMOverlay on a simulated U280, shared by the session (as one card would be)."""
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.sim.device import SimulatedU280
    return FlightLLMOverlay(device=SimulatedU280())


@pytest.fixture
def tiny_generator(sim_overlay, tiny_program, tiny_ckpt):
    """A Generator of the tiny program on the simulated overlay; its buffers are freed after the test."""
    from flightllm_overlay.runtime import Generator, Session
    session = Session(sim_overlay, tiny_program)
    try:
        yield Generator(session, tiny_ckpt.tokenizer)
    finally:
        session.close()
