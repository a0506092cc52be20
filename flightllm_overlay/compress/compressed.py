"""`CompressedModel`: packed weights per linear plus smoothed norms; its report, and its checkpoint file.

The checkpoint is one safetensors file:

* tensors ``layers.{i}.{linear}``: the linear's packed HBM blob (uint8, `PackedWeight.blob`),
  ``layers.{i}.attn_norm`` / ``ffn_norm`` (float32, smoothed RMSNorm gains), ``embed`` (float16),
  ``norm`` (float32) and ``lm_head`` (float16, only when not tied to the embedding);
* metadata ``format`` = "flightllm-compressed", ``version``, ``header`` (JSON: model args,
  config, each linear's shape and format, the source, calibration) and ``sha256`` (over the
  header and every tensor's name, dtype, shape and bytes, in name order).

A linear's format carries ``"exact": true`` when it runs on the MPE's exact group arithmetic
(`PackedWeight.exact`; the blob is the same bytes either way); files without the key (all
those written before it, and every linear on the INT8 path) load as exact=False.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, FlightLLMError
from ..spec.wformat import PackedWeight
from .config import LINEAR_INPUTS, CompressionConfig

FORMAT, VERSION = "flightllm-compressed", 1
#: the keys of a linear's format in the header (and optionally "exact")
FORMAT_KEYS = frozenset({"rows", "k", "bits", "group", "sparse"})
LINEARS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
SHORT = {"wq": "q", "wk": "k", "wv": "v", "wo": "o", "w_gate": "gate", "w_up": "up", "w_down": "down"}
#: the report's words for `CompressionConfig.allocation`
ALLOCATION_TEXT = {"fisher": "predicted loss increase (each output row's error weighted by the "
                             "calibration loss's squared gradient there)",
                   "relative": "each linear's relative output error"}


@dataclass
class CompressedModel:
    """A checkpoint in the device's weight formats (what the compiler places in HBM).

    layers: per layer {linear: PackedWeight}; attn_norm / ffn_norm: per layer (dim,) float32
    smoothed gains; embed (vocab, dim) float16; norm (dim,) float32; lm_head (vocab, dim)
    float16 or None when tied to embed.
    """

    args: object
    config: CompressionConfig
    layers: list
    attn_norm: list
    ffn_norm: list
    embed: np.ndarray
    norm: np.ndarray
    lm_head: np.ndarray | None = None
    source: str = ""
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ figures
    @property
    def act_group(self) -> int | None:
        """Channels per activation group the program runs (`config.act_group` when every linear
        input -- model width, attention output, FFN width -- is whole groups of it, else None:
        one scale per row, which the report says)."""
        group = getattr(self.config, "act_group", None)
        return group if group and not any(k % group for k in self.input_widths) else None

    @property
    def input_widths(self) -> tuple:
        a = self.args
        return (a.dim, a.n_heads * a.head_dim, a.hidden_dim)

    def linears(self):
        for i, layer in enumerate(self.layers):
            for name in LINEARS:
                yield i, name, layer[name]

    def totals(self) -> dict:
        """Weighted over every linear weight: code bits per kept weight (the budget's measure),
        bits per kept weight with group parameters (the budget's with group_bits), HBM bits per
        weight (everything:
        codes, group parameters, FSB codes, indices, row scales), density."""
        n = kept = code = wbits = hbm = 0.0
        for _, _, pw in self.linears():
            lay = pw.layout()
            n += pw.q.size
            kept += lay["kept"]
            code += pw.bits * lay["kept"]
            wbits += 8 * (lay["codes"] + lay["groups"])
            hbm += 8 * lay["total"]
        return {"code_bits": code / kept, "weight_bits": wbits / kept,
                "hbm_bits": hbm / n, "density": kept / n, "params": int(n)}

    def report(self) -> str:
        """Per-layer table: each linear's format (bits/group, density) and the layer's averages."""
        head = ["layer"] + [SHORT[k] for k in LINEARS] + ["code b", "HBM b/w", "density"]
        rows = []
        for i, layer in enumerate(self.layers):
            cells, kept, n, code, hbm = [str(i)], 0, 0, 0, 0
            for k in LINEARS:
                pw = layer[k]
                fmt = f"{pw.bits}b" + (f"/{pw.group}" if pw.bits < 8 else "")
                if pw.sparse:
                    fmt += f" {100 * pw.density:.0f}%"
                cells.append(fmt)
                lay = pw.layout()
                kept, n = kept + lay["kept"], n + pw.q.size
                code, hbm = code + pw.bits * lay["kept"], hbm + 8 * lay["total"]
            cells += [f"{code / kept:.2f}", f"{hbm / n:.2f}", f"{kept / n:.3f}"]
            rows.append(cells)
        t = self.totals()
        rows.append(["all"] + [""] * len(LINEARS)
                    + [f"{t['code_bits']:.2f}", f"{t['hbm_bits']:.2f}", f"{t['density']:.3f}"])
        widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
        fmt = lambda r: "  ".join(x.rjust(w) for x, w in zip(r, widths))
        lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
        lines.append(f"{self.config.name}: {t['params'] / 1e6:.1f} M linear weights, code bits "
                     f"{t['code_bits']:.2f} per kept weight ({t['weight_bits']:.2f} with group "
                     f"parameters), {t['hbm_bits']:.2f} HBM bits per weight with indices and "
                     f"scales, density {t['density']:.3f}")
        feedback = ("off (round to nearest)" if not self.config.error_feedback else
                    "layer by layer on the compressed model's inputs (sequential)"
                    if self.config.sequential else "on the float model's inputs")
        if self.config.error_feedback and self.config.refit:
            feedback += ", then each row's group parameters re-fitted by least squares"
        as_is = sum(1 for key, g in self.info.get("grids", {}).items()
                    if g["kept"] and self._exact(key))
        if self.config.error_feedback and as_is:    # (pipeline._error_feedback keeps them)
            feedback += (f" (not in the {as_is} linears whose source grid runs on exact group "
                         f"arithmetic: their codes are the source's)")
        lines.append(f"calibration: {self.info.get('calibration_tokens')} tokens; error "
                     f"feedback {feedback}")
        if self.info.get("allocation"):
            lines.append("formats allocated by " + ALLOCATION_TEXT[self.info["allocation"]])
        exact = sum(pw.exact for _, _, pw in self.linears())
        if exact:
            lines.append(f"exact group arithmetic (wcodes): {exact} of {7 * len(self.layers)} "
                         f"linears compute with (q M + B) / 256 times the row scale, without "
                         f"rounding to INT8")
        wide = tuple(getattr(self.config, "wide_points", ()))
        if wide:
            lines.append(f"activations: two INT8 planes (hi, then the residual's lo at its own "
                         f"scale: about 15 bits) at {', '.join(wide)}")
        narrow = [p for p in LINEAR_INPUTS if p not in wide]
        group = getattr(self.config, "act_group", None)
        if group and self.act_group and narrow:
            where = ("every linear input" if len(narrow) == len(LINEAR_INPUTS)
                     else "the other linear inputs")
            lines.append(f"activations: shared-exponent groups of {group} channels at {where} "
                         f"(the row's INT8 step divided by up to 2^7 per group)")
        elif group and narrow:
            lines.append(f"activations: one INT8 scale per row (groups of {group} asked for, but "
                         f"the linear inputs' widths {self.input_widths} are not whole groups)")
        qk = [layer[k] for layer in self.layers for k in ("wq", "wk")]
        if any(pw.sparse for pw in qk):
            size = sum(pw.shape[0] * pw.shape[1] for pw in qk)
            kept = sum(pw.density * pw.shape[0] * pw.shape[1] for pw in qk)
            lines.append(f"q/k: {kept / size:.3f} of their weights kept "
                         f"({self.config.qk_budget} budget)")
        if self.info.get("attn_pattern"):
            lines.append(f"block-sparse prefill attention: (sink, window) 64-token blocks per "
                         f"head, {self.info['attn_density']:.2f} of the causal blocks computed "
                         f"at {min(2048, self.args.max_seq_len)} tokens")
        grids = self.info.get("grids", {})
        if grids:
            kept = [g for g in grids.values() if g["kept"]]
            names = sorted({g["grid"] for g in grids.values()})
            line = (f"source grid {'/'.join(names)}: {len(grids)} of {7 * len(self.layers)} "
                    f"linears on it, codes kept in {len(kept)}")
            if kept:
                moved = [g.get("moved", 0.0) for g in kept]
                on_exact = {key for key, g in grids.items() if g["kept"] and self._exact(key)}
                ex = [g for key, g in grids.items() if key in on_exact]
                i8 = [g for key, g in grids.items() if g["kept"] and key not in on_exact]
                parts = []
                if ex:
                    parts.append(f"{len(ex)} on exact group arithmetic, held to (M, B)'s fixed "
                                 f"point: rms {np.mean([g['rms_steps'] for g in ex]):.4f}, max "
                                 f"{max(g['max_steps'] for g in ex):.4f} of a grid step")
                if i8:
                    parts.append(f"the INT8 target rounds the {'others' if ex else 'rest'}: rms "
                                 f"{np.mean([g['rms_steps'] for g in i8]):.3f}, max "
                                 f"{max(g['max_steps'] for g in i8):.3f} of a grid step")
                line += (f", lossless in {sum(g['lossless'] for g in kept)} "
                         f"({'; '.join(parts)})")
                if any(moved):
                    line += (f"; error feedback moved {100 * np.mean(moved):.2f}% of the codes "
                             f"(in {sum(m > 0 for m in moved)} linears) to spread that rounding")
            lines.append(line)
        return "\n".join(lines)

    def _exact(self, key: str) -> bool:
        """Whether linear "layer.name" (the keys of info['grids']) runs on exact arithmetic."""
        i, _, name = key.partition(".")
        try:
            return bool(self.layers[int(i)][name].exact)
        except (ValueError, IndexError, KeyError):
            return False

    # ------------------------------------------------------------------ file
    def tensors(self) -> tuple:
        """(tensors dict, header dict) of the checkpoint file."""
        tensors, fmts = {}, {}
        for i, name, pw in self.linears():
            key = f"layers.{i}.{name}"
            tensors[key] = pw.blob()
            fmts[key] = {"rows": pw.shape[0], "k": pw.shape[1], "bits": pw.bits,
                         "group": pw.group, "sparse": pw.sparse}
            if pw.exact:                    # (absent: INT8, as in files from before it)
                fmts[key]["exact"] = True
        for i, (an, fn) in enumerate(zip(self.attn_norm, self.ffn_norm)):
            tensors[f"layers.{i}.attn_norm"] = np.asarray(an, np.float32)
            tensors[f"layers.{i}.ffn_norm"] = np.asarray(fn, np.float32)
        tensors["embed"] = np.asarray(self.embed, np.float16)
        tensors["norm"] = np.asarray(self.norm, np.float32)
        if self.lm_head is not None:
            tensors["lm_head"] = np.asarray(self.lm_head, np.float16)
        header = {"args": asdict(self.args), "config": self.config.to_dict(), "linears": fmts,
                  "source": self.source, "info": self.info}
        return tensors, header

    def save(self, path) -> Path:
        from safetensors.numpy import save_file
        path = Path(path)
        tensors, header = self.tensors()
        text = json.dumps(header, sort_keys=True)
        save_file(tensors, str(path), metadata={"format": FORMAT, "version": str(VERSION),
                                                "header": text, "sha256": _digest(text, tensors)})
        return path

    @classmethod
    def load(cls, path) -> "CompressedModel":
        """Read a compressed checkpoint; CheckpointError names what is wrong with a bad file."""
        path = Path(path)
        fix = "recreate it with `flightllm compress`"
        if not path.is_file():
            raise CheckpointError(f"compressed checkpoint {path} does not exist; {fix}")
        try:
            from safetensors import safe_open
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:     # safetensors raises its own error types for damaged files
            raise CheckpointError(f"{path} is not a readable compressed checkpoint (truncated or "
                                  f"corrupt: {exc}); {fix}") from exc
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is a safetensors file but not a FlightLLM compressed "
                                  f"checkpoint (format {meta.get('format')!r}); {fix}")
        if meta.get("version") != str(VERSION):
            raise CheckpointError(f"{path} has version {meta.get('version')}, this toolkit reads "
                                  f"version {VERSION}; {fix} with this version")
        text = meta.get("header", "")
        if _digest(text, tensors) != meta.get("sha256"):
            raise CheckpointError(f"{path} is corrupt: its checksum does not match its contents "
                                  f"(damaged in storage or transfer); {fix}")
        try:
            header = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{path}: its header is not JSON ({exc}); {fix}") from None
        return cls._from(header, tensors, str(path))

    @classmethod
    def _from(cls, header, tensors, where) -> "CompressedModel":
        args = check_header(header, tensors, where)
        layers = [dict() for _ in range(args.n_layers)]
        try:
            for key, f in header["linears"].items():
                _, i, name = key.split(".")
                layers[int(i)][name] = PackedWeight.from_blob(tensors[key], f["rows"], f["k"],
                                                              f["bits"], f["group"], f["sparse"],
                                                              f.get("exact", False))
        except (FlightLLMError, KeyError, ValueError, IndexError, TypeError) as exc:
            raise CheckpointError(f"{where}: a packed weight does not decode ({exc}); the file "
                                  f"is inconsistent, recreate it with `flightllm compress`") from exc
        n = args.n_layers
        try:
            config = CompressionConfig.from_dict(header["config"])
        except (FlightLLMError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            raise CheckpointError(f"{where}: its compression settings are invalid ({exc}); the "
                                  f"file is inconsistent, recreate it with `flightllm compress`") from None
        return cls(args=args, config=config, layers=layers,
                   attn_norm=[tensors[f"layers.{i}.attn_norm"] for i in range(n)],
                   ffn_norm=[tensors[f"layers.{i}.ffn_norm"] for i in range(n)],
                   embed=tensors["embed"], norm=tensors["norm"], lm_head=tensors.get("lm_head"),
                   source=header.get("source", ""), info=header.get("info", {}))


def _digest(header_text: str, tensors: dict) -> str:
    h = hashlib.sha256(header_text.encode())
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def linear_shapes(args) -> dict:
    """(rows, k) of each linear of a LLaMA block."""
    return {"wq": (args.q_dim, args.dim), "wk": (args.kv_dim, args.dim),
            "wv": (args.kv_dim, args.dim), "wo": (args.dim, args.q_dim),
            "w_gate": (args.hidden_dim, args.dim), "w_up": (args.hidden_dim, args.dim),
            "w_down": (args.dim, args.hidden_dim)}


def check_header(header, tensors: dict, where: str):
    """The ModelArgs of a compressed checkpoint's header, after checking the header against the
    tensors: field types, every linear's shape and format, every tensor's dtype, shape and
    finiteness, nothing missing or extra.  CheckpointError names the first problem."""
    from ..model.args import ModelArgs
    from ..spec.wformat import BITS

    def bad(what):
        return CheckpointError(f"{where}: {what}; the file is inconsistent, recreate it with "
                               f"`flightllm compress`")
    if not isinstance(header, dict) or not {"args", "config", "linears"} <= set(header):
        raise bad("its header lacks args, config or linears")
    if not isinstance(header["args"], dict) or not isinstance(header["linears"], dict) or \
            not isinstance(header["config"], dict) or not isinstance(header.get("info", {}), dict) \
            or not isinstance(header.get("source", ""), str):
        raise bad("its header fields have the wrong types")
    try:
        args = ModelArgs(**header["args"])
    except (CheckpointError, TypeError) as exc:
        raise bad(f"its model args are invalid ({exc})") from None
    if args.arch != "llama":
        raise bad(f"compressed checkpoints hold LLaMA models, not {args.arch!r}")
    shapes = linear_shapes(args)
    want = {f"layers.{i}.{name}" for i in range(args.n_layers) for name in LINEARS}
    if set(header["linears"]) != want:
        odd = sorted(set(header["linears"]) ^ want)[:3]
        raise bad(f"its linears do not match {args.n_layers} layers (e.g. {odd})")
    for key, f in header["linears"].items():
        if not isinstance(f, dict) or not (FORMAT_KEYS <= set(f) <= FORMAT_KEYS | {"exact"}):
            raise bad(f"the format of {key} is malformed")
        rows_k = (f["rows"], f["k"])
        if rows_k != shapes[key.split(".")[2]]:
            raise bad(f"{key} is {rows_k}, the model implies {shapes[key.split('.')[2]]}")
        if f["bits"] not in BITS or isinstance(f["bits"], bool) or not isinstance(f["sparse"], bool) \
                or isinstance(f["group"], bool) or not isinstance(f["group"], int) or \
                not 0 < f["group"] <= f["k"]:
            raise bad(f"{key} has an invalid format {f}")
        if not isinstance(f.get("exact", False), bool) or \
                f.get("exact") and (f["bits"] == 8 or f["sparse"]):
            raise bad(f"{key} has an invalid format {f} (exact group arithmetic is for dense "
                      f"weights below 8 bits)")
        t = tensors.get(key)
        if t is None or t.dtype != np.uint8 or t.ndim != 1:
            raise bad(f"tensor {key} is missing or not a uint8 blob")
    expected = {"embed": (np.float16, (args.vocab_size, args.dim)),
                "norm": (np.float32, (args.dim,))}
    if "lm_head" in tensors:
        expected["lm_head"] = (np.float16, (args.vocab_size, args.dim))
    for i in range(args.n_layers):
        for norm in ("attn_norm", "ffn_norm"):
            expected[f"layers.{i}.{norm}"] = (np.float32, (args.dim,))
    extra = sorted(set(tensors) - set(expected) - want)
    if extra:
        raise bad(f"it holds tensors no model part uses ({extra[:3]})")
    for key, (dtype, shape) in expected.items():
        t = tensors.get(key)
        if t is None or t.dtype != dtype or tuple(t.shape) != shape:
            raise bad(f"tensor {key} is {'missing' if t is None else f'{t.dtype} {t.shape}'}; "
                      f"the model implies {np.dtype(dtype)} {shape}")
        if not np.isfinite(t).all():
            raise bad(f"tensor {key} holds NaN or infinite values")
    return args
