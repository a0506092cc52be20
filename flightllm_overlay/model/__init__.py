"""The model layer: LLaMA shapes, checkpoint loading (HF folders, GGUF), tokenizer and the float32 reference.

The float references (`Transformer`, and the families that register with them) need torch and
are imported on first use (`model_family`, or `Transformer` from here), so that reading a
checkpoint's shape and tokenizer stays light.
"""
from .args import MODEL_TABLE, ModelArgs
from .checkpoint import DEFAULT_MODEL, Checkpoint, default_model_path, load_checkpoint
from .tokenizer import StreamDecoder, Tokenizer

__all__ = [
    "MODEL_TABLE", "ModelArgs", "DEFAULT_MODEL", "Checkpoint", "default_model_path", "load_checkpoint",
    "Transformer", "Tokenizer", "StreamDecoder",
]


def __getattr__(name):
    if name == "Transformer":
        from .llama import Transformer
        return Transformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
