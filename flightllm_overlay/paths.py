"""Where flightllm_overlay keeps its files: the cache folder ($FLIGHTLLM_CACHE or the user cache)."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$FLIGHTLLM_CACHE, or the platform's user cache folder for flightllm_overlay."""
    env = os.environ.get("FLIGHTLLM_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("flightllm_overlay", appauthor=False))
