"""Perplexity of a token sequence, on the accelerator (all-logits prefill) and on the float reference."""
from __future__ import annotations

import math

import numpy as np

from ..errors import FlightLLMError


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed negative log-likelihood of `targets` under rows of `logits` (float64 log-softmax)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].sum())


def windows(ids, window: int):
    ids = list(ids)
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window]
        if len(chunk) >= 2:
            yield chunk


def device_runner(session, window: int | None = None):
    """tokens -> logits (T, vocab) of every position, run from position 0 in prefill launches.

    The session's program must have been compiled with `all_logits=True`."""
    step = session.program.step("prefill")
    if not step.all_logits:
        raise FlightLLMError("perplexity needs every position's logits: compile with "
                             "all_logits=True (flightllm compile --all-logits)")
    if window is not None and window > step.ctx:
        raise FlightLLMError(f"window {window} exceeds the program's context {step.ctx}")

    def run(tokens):
        tokens = list(tokens)
        return np.concatenate([session.run("prefill", tokens[s:s + step.rows], s)
                               for s in range(0, len(tokens), step.rows)])
    return run


def perplexity_device(session, ids, window: int = 256) -> float:
    """Perplexity over non-overlapping windows, each run from position 0 in prefill chunks."""
    run = device_runner(session, window)
    nll, count = 0.0, 0
    for chunk in windows(ids, window):
        nll += _nll(run(chunk)[:-1], np.asarray(chunk[1:]))
        count += len(chunk) - 1
    return math.exp(nll / count)


def perplexity_reference(transformer, ids, window: int = 256) -> float:
    """The same measurement with the float reference (`model.Transformer`)."""
    nll, count = 0.0, 0
    for chunk in windows(ids, window):
        transformer.reset()
        logits = transformer.forward(chunk, 0).numpy()[:-1]
        nll += _nll(logits, np.asarray(chunk[1:]))
        count += len(chunk) - 1
    return math.exp(nll / count)
