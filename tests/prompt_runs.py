"""One prompt run on the simulated overlay the way the compressed-program tests compare it: two prefill launches, then decode steps."""
from __future__ import annotations

import numpy as np

from flightllm_overlay.runtime import Session

PROMPT = np.random.default_rng(4).integers(3, 300, 200).tolist()


def run_prompt(overlay, program, prompt=PROMPT):
    """(prefill logits of `prompt` in two launches (128 rows, then the rest), decode logits of
    prompt[40:48] one token at a time after prompt[:40])."""
    with Session(overlay, program) as s:
        got = np.concatenate([s.run("prefill", prompt[:128], 0),
                              s.run("prefill", prompt[128:], 128)])
        s.run("prefill", prompt[:40], 0)
        return got, np.stack([s.run("decode", [t], 40 + n)[-1]
                              for n, t in enumerate(prompt[40:48])])
