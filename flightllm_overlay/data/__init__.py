"""Bundled text: English Wikipedia prose (CC BY-SA) for perplexity and calibration, prepared offline."""
from __future__ import annotations

from importlib import resources

from ..errors import FlightLLMError

TEXTS = {"eval": "enwiki_eval.txt", "calibration": "enwiki_calib.txt"}


def text(kind: str = "eval") -> str:
    """The bundled text without its attribution header ('eval' or 'calibration').

    Made by benchmarks/prepare_eval_text.py from the gensim==4.4.0 wheel's enwiki dump; see the
    header of each file for the licence (CC BY-SA 3.0) and the articles it holds.
    """
    if kind not in TEXTS:
        raise FlightLLMError(f"no bundled text {kind!r}; choose one of {sorted(TEXTS)}")
    try:
        raw = resources.files(__name__).joinpath(TEXTS[kind]).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FlightLLMError(f"the bundled text {TEXTS[kind]} is missing from the installed "
                             f"package; reinstall it, or regenerate the file with "
                             f"benchmarks/prepare_eval_text.py") from exc
    lines = raw.splitlines()
    body = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "\n".join(lines[body:]).strip() + "\n"


def attribution(kind: str = "eval") -> str:
    """The file's header: source, licence and article titles."""
    raw = resources.files(__name__).joinpath(TEXTS[kind]).read_text(encoding="utf-8")
    return "\n".join(line[2:] for line in raw.splitlines() if line.startswith("# "))
