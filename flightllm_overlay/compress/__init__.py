"""Compression of a float checkpoint into the device's formats: smoothing, pruning, mixed precision."""
from .compressed import CompressedModel
from .config import CompressionConfig
from .emulate import Emulator, perplexity, reference_runner
from .pipeline import calibration_tokens, compress

__all__ = ["CompressedModel", "CompressionConfig", "Emulator", "compress", "calibration_tokens",
           "perplexity", "reference_runner"]
