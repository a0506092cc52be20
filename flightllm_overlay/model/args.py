"""Model shapes: the `ModelArgs` dataclass, its Hugging Face config reader, and a name -> shape table."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from ..errors import CheckpointError

#: Architectures the float reference implements (`general.architecture` / HF `model_type`).
SUPPORTED_ARCHS = ("llama",)
#: Hugging Face `architectures` entries we accept in a config.json.
SUPPORTED_HF_CLASSES = ("LlamaForCausalLM",)


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    """Shape and hyperparameters of a LLaMA-family decoder.

    Parameters
    ----------
    name : str
        A short name, e.g. ``"smollm2-135m"``.
    arch : str
        Architecture family; only ``"llama"`` is implemented.
    dim : int
        Model (residual stream) width.
    n_layers : int
        Number of transformer blocks.
    n_heads : int
        Query heads per block.
    n_kv_heads : int
        Key/value heads per block (``n_heads`` for plain MHA, fewer for GQA).
    head_dim : int
        Width of one head; 0 means ``dim // n_heads``.
    hidden_dim : int
        Inner width of the SwiGLU feed-forward network.
    vocab_size : int
        Rows of the token embedding and of the LM head.
    norm_eps : float
        RMSNorm epsilon.
    rope_theta : float
        RoPE frequency base.
    max_seq_len : int
        Longest context the model was trained for.
    tie_embeddings : bool
        True when the LM head is the token embedding.
    """

    name: str = "custom"
    arch: str = "llama"
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int = 0  # 0 -> n_heads
    head_dim: int = 0  # 0 -> dim // n_heads
    hidden_dim: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if not self.head_dim and self.n_heads:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.arch not in SUPPORTED_ARCHS:
            raise CheckpointError(
                f"Unsupported architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}."
            )
        for field in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim", "vocab_size"):
            if int(getattr(self, field)) <= 0:
                raise CheckpointError(f"ModelArgs.{field} must be positive, got {getattr(self, field)!r}.")
        if self.n_heads % self.n_kv_heads:
            raise CheckpointError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}; "
                "grouped-query attention needs whole groups."
            )
        if self.head_dim % 2:
            raise CheckpointError(f"head_dim={self.head_dim} must be even for RoPE.")

    # ------------------------------------------------------------------ derived sizes
    @property
    def n_rep(self) -> int:
        """Query heads that share one KV head."""
        return self.n_heads // self.n_kv_heads

    @property
    def q_dim(self) -> int:
        """Output width of the Q projection, ``n_heads * head_dim``."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Output width of the K and V projections, ``n_kv_heads * head_dim``."""
        return self.n_kv_heads * self.head_dim

    @property
    def n_params(self) -> int:
        """Parameter count (a tied LM head counted once)."""
        attn = self.dim * (2 * self.q_dim + 2 * self.kv_dim)
        ffn = 3 * self.dim * self.hidden_dim
        per_layer = attn + ffn + 2 * self.dim
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * per_layer + self.dim + head

    def replace(self, **changes: Any) -> "ModelArgs":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return asdict(self)

    # ------------------------------------------------------------------ HF config.json
    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str | None = None) -> "ModelArgs":
        """Build from a Hugging Face ``config.json`` dict of a ``LlamaForCausalLM``.

        Raises
        ------
        CheckpointError
            For another architecture, or for LLaMA variants the reference does not implement
            (RoPE scaling, biases, an activation other than SiLU).
        """
        archs = list(config.get("architectures") or [])
        model_type = config.get("model_type")
        if (archs and not set(archs) & set(SUPPORTED_HF_CLASSES)) or model_type not in (None, *SUPPORTED_ARCHS):
            raise CheckpointError(
                f"Unsupported architecture {archs or model_type!r} in config.json; supported: "
                f"{', '.join(SUPPORTED_HF_CLASSES)} (model_type {', '.join(SUPPORTED_ARCHS)})."
            )
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size", "vocab_size") if k not in config]
        if missing:
            raise CheckpointError(f"config.json lacks {', '.join(missing)}; it is not a complete LLaMA config.")
        rope = dict(config.get("rope_parameters") or {})
        scaling = config.get("rope_scaling") or {}
        rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
        if rope_type != "default":
            raise CheckpointError(f"RoPE scaling {rope_type!r} is not implemented; only plain RoPE is.")
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise CheckpointError("LLaMA variants with attention or MLP biases are not implemented.")
        if config.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"Activation {config['hidden_act']!r} is not implemented; only silu is.")
        n_heads = int(config["num_attention_heads"])
        return cls(
            name=name or str(config.get("_name_or_path") or "hf-llama"),
            arch="llama",
            dim=int(config["hidden_size"]),
            n_layers=int(config["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            head_dim=int(config.get("head_dim") or 0),
            hidden_dim=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            max_seq_len=int(config.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    def to_hf_config(self) -> dict:
        """A Hugging Face ``config.json`` dict that ``LlamaForCausalLM`` loads."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.hidden_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_seq_len,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "float32",
        }

    @classmethod
    def from_name(cls, name: str) -> "ModelArgs":
        """The row of `MODEL_TABLE` called ``name``."""
        try:
            return MODEL_TABLE[name]
        except KeyError:
            raise CheckpointError(
                f"No model called {name!r} in MODEL_TABLE; known: {', '.join(sorted(MODEL_TABLE))}."
            ) from None


def _row(**kw: Any) -> tuple[str, ModelArgs]:
    return kw["name"], ModelArgs(**kw)


#: Known shapes; adding a model is one row.
MODEL_TABLE: dict[str, ModelArgs] = dict([
    _row(name="smollm2-135m", dim=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, hidden_dim=1536,
         vocab_size=49152, norm_eps=1e-5, rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True),
    _row(name="smollm2-360m", dim=960, n_layers=32, n_heads=15, n_kv_heads=5, head_dim=64, hidden_dim=2560,
         vocab_size=49152, norm_eps=1e-5, rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True),
    _row(name="tinyllama-1.1b", dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, head_dim=64, hidden_dim=5632,
         vocab_size=32000, norm_eps=1e-5, rope_theta=10000.0, max_seq_len=2048, tie_embeddings=False),
    _row(name="llama2-7b", dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, head_dim=128, hidden_dim=11008,
         vocab_size=32000, norm_eps=1e-5, rope_theta=10000.0, max_seq_len=4096, tie_embeddings=False),
    _row(name="llama2-13b", dim=5120, n_layers=40, n_heads=40, n_kv_heads=40, head_dim=128, hidden_dim=13824,
         vocab_size=32000, norm_eps=1e-5, rope_theta=10000.0, max_seq_len=4096, tie_embeddings=False),
])
