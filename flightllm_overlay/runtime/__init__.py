"""Runtime: run compiled programs on an overlay (Session) and generate text (Generator)."""
from .generator import GenerationStats, Generator, Token
from .sampling import SamplingParams, sample
from .session import Session, StepStats

__all__ = ["Generator", "GenerationStats", "Token", "SamplingParams", "sample", "Session",
           "StepStats"]
