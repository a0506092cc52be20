"""argparse types of the flightllm command: every number, text and output path checked while parsing.

Each type raises ``argparse.ArgumentTypeError`` with what is wrong and what is allowed, so a bad
argument ends in argparse's usage line and exit status 2, before anything is loaded.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def integer(low: int | None = None, high: int | None = None, what: str = "an integer"):
    """An int in [low, high] (either bound may be open)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: {_range(low, high)}")
        return value
    parse.__name__ = what          # argparse names the type in its messages
    return parse


def real(low: float | None = None, high: float | None = None, low_open: bool = False,
         what: str = "a number"):
    """A finite float in [low, high] ((low, high] with `low_open`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: "
                                             f"{_range(low, high, low_open)}")
        return value
    parse.__name__ = what
    return parse


def _range(low, high, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"allowed {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"must be {'>' if low_open else '>='} {low:g}"
    return f"must be <= {high:g}"


def text(value: str) -> str:
    """Command-line text that is valid Unicode (no undecodable bytes, no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start:exc.end].encode("utf-8", "surrogateescape") \
            if all(0xDC80 <= ord(c) <= 0xDCFF for c in value[exc.start:exc.end]) else None
        detail = f"bytes {bad!r}, not UTF-8" if bad else "a lone surrogate"
        raise argparse.ArgumentTypeError(
            f"the text holds {detail} at character {exc.start}: pass UTF-8 text "
            f"(check the terminal's locale, or read the prompt from a UTF-8 file)") from None
    return value


def output_file(value: str) -> Path:
    """A file path that can be written: its folder exists, it is not a folder, it is writable."""
    path = Path(text(value)).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; give a file name inside it")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist; create it first")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{value} exists and is not writable")
    if not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create files in {folder} (no write permission)")
    return path


def input_file(value: str) -> Path:
    """An existing file (not a folder)."""
    path = Path(text(value)).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder, not a file")
    return path


def model(value: str) -> str:
    """--model: text (a name, a folder or a .gguf file; load_model checks what it is)."""
    return text(value)


positive = integer(1, what="a positive integer")
at_least_two = integer(2, what="an integer >= 2")
finite = real(what="a number")
non_negative = integer(0, what="a non-negative integer")
seed = integer(0, 2**63 - 1, what="a seed (integer >= 0)")
temperature = real(0.0, 100.0, what="a temperature (0 = greedy)")
probability = real(0.0, 1.0, low_open=True, what="a probability in (0, 1]")
density = real(0.125, 1.0, what="a density in [0.125, 1]")
seconds = real(0.0, 24 * 3600.0, low_open=True, what="a time in seconds")
