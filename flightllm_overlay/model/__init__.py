"""The model layer: LLaMA shapes, checkpoint loading (HF folders, GGUF), tokenizer and the float32 reference."""
from .args import MODEL_TABLE, ModelArgs
from .checkpoint import DEFAULT_MODEL, Checkpoint, default_model_path, load_checkpoint
from .llama import Transformer
from . import opt  # noqa: F401  (registers the OPT family)
from .tokenizer import StreamDecoder, Tokenizer

__all__ = [
    "MODEL_TABLE", "ModelArgs", "DEFAULT_MODEL", "Checkpoint", "default_model_path", "load_checkpoint",
    "Transformer", "Tokenizer", "StreamDecoder",
]
