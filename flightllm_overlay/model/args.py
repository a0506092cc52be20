"""Model shapes: the `ModelArgs` dataclass, its Hugging Face config reader, and a name -> shape table."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from ..errors import CheckpointError

#: Architectures the float reference implements (`general.architecture` / HF `model_type`).
SUPPORTED_ARCHS = ("llama", "opt")
#: Hugging Face `architectures` entries we accept in a config.json.
SUPPORTED_HF_CLASSES = ("LlamaForCausalLM", "OPTForCausalLM")
#: OPT's learned position table has this many extra rows before position 0 (HF `embed_positions`).
OPT_POSITION_OFFSET = 2


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    """Shape and hyperparameters of a decoder of the LLaMA family or the OPT family.

    ``arch="llama"``: RMSNorm, RoPE, GQA, SwiGLU FFN (gate, up, down), no biases.
    ``arch="opt"``: pre-LayerNorm with bias, learned absolute positions (offset 2), MHA, ReLU FFN
    (fc1, fc2), a bias on every linear layer except the LM head (OPT's pre-LN variant, as in
    OPT-125M and OPT-1.3B to 66B; not OPT-350M, which normalises after each block).

    Parameters
    ----------
    name : str
        A short name, e.g. ``"smollm2-135m"``.
    arch : str
        Architecture family: ``"llama"`` or ``"opt"``.
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
        Inner width of the feed-forward network (SwiGLU for llama, fc1/fc2 for opt).
    vocab_size : int
        Rows of the token embedding and of the LM head.
    norm_eps : float
        RMSNorm (llama) or LayerNorm (opt) epsilon.
    rope_theta : float
        RoPE frequency base (llama only).
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
        _check_types(self)
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
        if self.arch == "opt" and self.n_kv_heads != self.n_heads:
            raise CheckpointError(f"OPT uses multi-head attention: n_kv_heads={self.n_kv_heads} must equal "
                                  f"n_heads={self.n_heads}.")
        if self.arch == "llama" and self.head_dim % 2:
            raise CheckpointError(f"head_dim={self.head_dim} must be even for RoPE.")
        for field, hi in LIMITS.items():
            if int(getattr(self, field)) > hi:
                raise CheckpointError(f"ModelArgs.{field}={getattr(self, field)} is beyond the "
                                      f"largest this toolkit handles ({hi}); the config is corrupt.")
        if not 0 < self.norm_eps < 1:
            raise CheckpointError(f"norm_eps={self.norm_eps!r} must be a small positive number.")
        if self.arch == "llama" and not 1.0 <= self.rope_theta <= 1e12:
            raise CheckpointError(f"rope_theta={self.rope_theta!r} must be a finite base >= 1 "
                                  "(typically 10000); 0 or inf gives NaN positions.")
        if self.max_seq_len <= 0:
            raise CheckpointError(f"max_seq_len={self.max_seq_len} must be positive.")

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
        head = 0 if self.tie_embeddings else self.vocab_size * self.dim
        if self.arch == "opt":      # biases, two LayerNorms (gain + bias), the position table
            ffn = 2 * self.dim * self.hidden_dim + self.hidden_dim + self.dim
            per_layer = attn + self.q_dim + 2 * self.kv_dim + self.dim + ffn + 4 * self.dim
            positions = (self.max_seq_len + OPT_POSITION_OFFSET) * self.dim
            return self.vocab_size * self.dim + positions + self.n_layers * per_layer + 2 * self.dim + head
        ffn = 3 * self.dim * self.hidden_dim
        per_layer = attn + ffn + 2 * self.dim
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
        if not isinstance(config, Mapping):
            raise CheckpointError(f"config.json must hold a JSON object, not {type(config).__name__}.")
        archs = config.get("architectures") or []
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise CheckpointError(f"config.json: architectures must be a list of names, got {archs!r:.60}.")
        model_type = config.get("model_type")
        if model_type == "opt" or "OPTForCausalLM" in archs:
            return cls._from_opt_config(config, name)
        if (archs and not set(archs) & set(SUPPORTED_HF_CLASSES)) or model_type not in (None, *SUPPORTED_ARCHS):
            raise CheckpointError(
                f"Unsupported architecture {archs or model_type!r} in config.json; supported: "
                f"{', '.join(SUPPORTED_HF_CLASSES)} (model_type {', '.join(SUPPORTED_ARCHS)})."
            )
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size", "vocab_size") if k not in config]
        if missing:
            raise CheckpointError(f"config.json lacks {', '.join(missing)}; it is not a complete LLaMA config.")
        rope = config.get("rope_parameters") or {}
        scaling = config.get("rope_scaling") or {}
        if not isinstance(rope, Mapping) or not isinstance(scaling, Mapping):
            raise CheckpointError("config.json: rope_parameters and rope_scaling must be objects.")
        rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
        if rope_type != "default":
            raise CheckpointError(f"RoPE scaling {rope_type!r} is not implemented; only plain RoPE is.")
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise CheckpointError("LLaMA variants with attention or MLP biases are not implemented.")
        if config.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"Activation {config['hidden_act']!r} is not implemented; only silu is.")
        n_heads = _cfg_int(config, "num_attention_heads")
        return cls(
            name=name or str(config.get("_name_or_path") or "hf-llama"),
            arch="llama",
            dim=_cfg_int(config, "hidden_size"),
            n_layers=_cfg_int(config, "num_hidden_layers"),
            n_heads=n_heads,
            n_kv_heads=_cfg_int(config, "num_key_value_heads", n_heads),
            head_dim=_cfg_int(config, "head_dim", 0),
            hidden_dim=_cfg_int(config, "intermediate_size"),
            vocab_size=_cfg_int(config, "vocab_size"),
            norm_eps=_cfg_float(config, "rms_norm_eps", 1e-6),
            rope_theta=_cfg_float(rope, "rope_theta", _cfg_float(config, "rope_theta", 10000.0)),
            max_seq_len=_cfg_int(config, "max_position_embeddings", 2048),
            tie_embeddings=_cfg_bool(config, "tie_word_embeddings", False),
        )

    @classmethod
    def _from_opt_config(cls, config: Mapping[str, Any], name: str | None) -> "ModelArgs":
        """An ``OPTForCausalLM`` config.json; only the pre-LN variant with biases and ReLU."""
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim",
                               "vocab_size") if k not in config]
        if missing:
            raise CheckpointError(f"config.json lacks {', '.join(missing)}; it is not a complete OPT config.")
        dim = _cfg_int(config, "hidden_size")
        problems = []
        if not config.get("do_layer_norm_before", True):
            problems.append("do_layer_norm_before=False (post-LayerNorm blocks, as in OPT-350M)")
        if _cfg_int(config, "word_embed_proj_dim", dim) != dim:
            problems.append(f"word_embed_proj_dim={config['word_embed_proj_dim']} != hidden_size={dim} "
                            "(project_in/project_out layers)")
        if config.get("activation_function", "relu") != "relu":
            problems.append(f"activation_function={config['activation_function']!r} (only relu)")
        if not config.get("enable_bias", True):
            problems.append("enable_bias=False (linear layers without biases)")
        if not config.get("layer_norm_elementwise_affine", True):
            problems.append("layer_norm_elementwise_affine=False (LayerNorm without gain and bias)")
        if config.get("_remove_final_layer_norm", False):
            problems.append("_remove_final_layer_norm=True (no final LayerNorm)")
        if problems:
            raise CheckpointError("This OPT variant is not implemented: " + "; ".join(problems) + ". Only "
                                  "pre-LayerNorm OPT with biases, ReLU and hidden-size embeddings is "
                                  "(OPT-125M, 1.3B, 2.7B, 6.7B, 13B, 30B, 66B).")
        return cls(
            name=name or str(config.get("_name_or_path") or "hf-opt"),
            arch="opt",
            dim=dim,
            n_layers=_cfg_int(config, "num_hidden_layers"),
            n_heads=_cfg_int(config, "num_attention_heads"),
            hidden_dim=_cfg_int(config, "ffn_dim"),
            vocab_size=_cfg_int(config, "vocab_size"),
            norm_eps=1e-5,                          # torch.nn.LayerNorm's default, which OPT uses
            max_seq_len=_cfg_int(config, "max_position_embeddings", 2048),
            tie_embeddings=_cfg_bool(config, "tie_word_embeddings", True),
        )

    def to_hf_config(self) -> dict:
        """A Hugging Face ``config.json`` dict that ``LlamaForCausalLM`` (or ``OPTForCausalLM``) loads."""
        if self.arch == "opt":
            return {
                "architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": self.dim,
                "num_hidden_layers": self.n_layers, "num_attention_heads": self.n_heads,
                "ffn_dim": self.hidden_dim, "vocab_size": self.vocab_size, "word_embed_proj_dim": self.dim,
                "max_position_embeddings": self.max_seq_len, "do_layer_norm_before": True,
                "activation_function": "relu", "enable_bias": True, "layer_norm_elementwise_affine": True,
                "tie_word_embeddings": self.tie_embeddings, "dropout": 0.0, "attention_dropout": 0.0,
                "torch_dtype": "float32",
            }
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


#: Largest value of each size field (far above any model; a corrupt config is refused before
#: anything is allocated or any per-layer name is built).
LIMITS = {"dim": 1 << 16, "n_layers": 1024, "n_heads": 1024, "n_kv_heads": 1024, "head_dim": 4096,
          "hidden_dim": 1 << 18, "vocab_size": 1 << 20, "max_seq_len": 1 << 24}
_INT_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim", "vocab_size",
               "max_seq_len")


def _cfg_int(config: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """An integer field of a config.json (null or absent: `default`); CheckpointError otherwise."""
    v = config.get(key)
    if v is None and default is not None:
        return default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(f"config.json: {key} must be an integer, got {v!r:.40}. Restore the "
                              "original config.json.")
    return v


def _cfg_float(config: Mapping[str, Any], key: str, default: float) -> float:
    import math
    v = config.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise CheckpointError(f"config.json: {key} must be a finite number, got {v!r:.40}.")
    return float(v)


def _cfg_bool(config: Mapping[str, Any], key: str, default: bool) -> bool:
    v = config.get(key, default)
    if not isinstance(v, bool):
        raise CheckpointError(f"config.json: {key} must be true or false, got {v!r:.40}.")
    return v


def _check_types(a: "ModelArgs") -> None:
    """Each field of the right type: integers (not bools or floats), finite floats, strings."""
    import math
    for field in _INT_FIELDS:
        v = getattr(a, field)
        if isinstance(v, bool) or not isinstance(v, int):
            raise CheckpointError(f"ModelArgs.{field} must be an integer, got {v!r:.40}.")
    for field in ("norm_eps", "rope_theta"):
        v = getattr(a, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CheckpointError(f"ModelArgs.{field} must be a finite number, got {v!r:.40}.")
    if not isinstance(a.name, str) or not isinstance(a.arch, str):
        raise CheckpointError(f"ModelArgs.name and .arch must be strings, got {a.name!r:.40}, "
                              f"{a.arch!r:.40}.")
    if not isinstance(a.tie_embeddings, bool):
        raise CheckpointError(f"ModelArgs.tie_embeddings must be true or false, got "
                              f"{a.tie_embeddings!r:.40}.")


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
    # LLaMA 3 8B (HF meta-llama/Meta-Llama-3-8B config.json): GQA with 8 KV heads, 128,256 tokens
    _row(name="llama3-8b", dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, hidden_dim=14336,
         vocab_size=128256, norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192, tie_embeddings=False),
    # LLaMA 2 70B (HF meta-llama/Llama-2-70b-hf config.json): GQA with 8 KV heads
    _row(name="llama2-70b", dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, head_dim=128, hidden_dim=28672,
         vocab_size=32000, norm_eps=1e-5, rope_theta=10000.0, max_seq_len=4096, tie_embeddings=False),
    # OPT (Zhang et al. 2022, Table 1; HF facebook/opt-* config.json): MHA, ffn = 4 x dim, tied head
    _row(name="opt-125m", arch="opt", dim=768, n_layers=12, n_heads=12, hidden_dim=3072, vocab_size=50272,
         norm_eps=1e-5, max_seq_len=2048, tie_embeddings=True),
    _row(name="opt-1.3b", arch="opt", dim=2048, n_layers=24, n_heads=32, hidden_dim=8192, vocab_size=50272,
         norm_eps=1e-5, max_seq_len=2048, tie_embeddings=True),
    _row(name="opt-6.7b", arch="opt", dim=4096, n_layers=32, n_heads=32, hidden_dim=16384, vocab_size=50272,
         norm_eps=1e-5, max_seq_len=2048, tie_embeddings=True),
    _row(name="opt-13b", arch="opt", dim=5120, n_layers=40, n_heads=40, hidden_dim=20480, vocab_size=50272,
         norm_eps=1e-5, max_seq_len=2048, tie_embeddings=True),
])
