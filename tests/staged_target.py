"""A U280 target whose global buffer is too small for the tiny LLaMA's 128-row prefill on chip, so that its prefill is staged through HBM."""
from __future__ import annotations

import dataclasses


def staging_target(gbuf_bytes: int = 160 * 1024):
    """The U280 with a global buffer too small for the tiny LLaMA's 128-row prefill on chip
    (about 200 KB) but large enough for its staged plan: prefill steps are then staged."""
    from flightllm_overlay.config import load_target
    t = load_target("u280")
    bufs = dict(t.buffers)
    bufs["gbuf"] = dataclasses.replace(bufs["gbuf"], depth=gbuf_bytes // bufs["gbuf"].width)
    return t.with_overrides(buffers=bufs)
