"""Text <-> token ids: a thin wrapper over `tokenizers.Tokenizer` with chat templates and streaming decode."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import tokenizers

from ..errors import CheckpointError

#: Used when a model ships no chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Special tokens that end a turn in common LLaMA-family vocabularies; those present become stop ids.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<|end|>")


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, Mapping):
        return value.get("content")
    return value


class Tokenizer:
    """Encode, decode and format chats for one model.

    Parameters
    ----------
    backend : tokenizers.Tokenizer
        The fast tokenizer doing the work.
    bos_id, eos_id : int or None
        Beginning / end of sequence token ids.
    stop_ids : iterable of int, optional
        Ids that end generation; defaults to ``eos_id`` plus the end markers found in the vocabulary.
    chat_template : str, optional
        Jinja2 chat template; ChatML when None.
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, bos_id: int | None = None, eos_id: int | None = None,
                 stop_ids: Iterable[int] | None = None, chat_template: str | None = None) -> None:
        if chat_template is not None and not isinstance(chat_template, str):
            raise CheckpointError(f"The chat template must be text, got {type(chat_template).__name__}; "
                                  "the tokenizer files are corrupt.")
        n = backend.get_vocab_size(with_added_tokens=True)
        for what, i in (("bos", bos_id), ("eos", eos_id), *(("stop", j) for j in stop_ids or ())):
            if i is not None and (isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n):
                raise CheckpointError(f"The {what} token id {i!r:.40} is not an id of this "
                                      f"{n}-token vocabulary; the tokenizer files are corrupt.")
        self.backend = backend
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.chat_template = chat_template
        if stop_ids is None:
            stop_ids = [eos_id] if eos_id is not None else []
            stop_ids += [i for i in map(backend.token_to_id, END_MARKERS) if i is not None]
        self.stop_ids: set[int] = set(int(i) for i in stop_ids)
        self._template = None
        self.name: str | None = None     # the model it belongs to, set by the checkpoint loader
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of everything that decides the ids: the vocabulary and rules, special ids and
        chat template.  Programs record it so that they run only with their model's tokenizer."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.backend.to_str().encode())
            h.update(json.dumps([self.bos_id, self.eos_id, sorted(self.stop_ids),
                                 self.chat_template]).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``, ``chat_template.jinja``,
        ``generation_config.json`` when present) from a Hugging Face folder.

        ``folder`` may also be the ``tokenizer.json`` file itself; the other files are looked for next to it.
        """
        path = Path(folder)
        if path.is_dir():
            path = path / "tokenizer.json"
        folder = path.parent
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise CheckpointError(f"Cannot read {path}: {exc}. Replace it with a valid tokenizer.json.") from exc
        try:
            return cls._from_configs(backend, folder)
        except (TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"The tokenizer files in {folder} are inconsistent ({exc}). Replace "
                                  "tokenizer_config.json / generation_config.json with the originals.") from None

    @classmethod
    def _from_configs(cls, backend, folder: Path) -> "Tokenizer":
        config = _read_json(folder / "tokenizer_config.json")
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = {t.get("name"): t.get("template") for t in template}.get("default")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        bos = _token_text(config.get("bos_token"))
        eos = _token_text(config.get("eos_token"))
        if not isinstance(bos, (str, type(None))) or not isinstance(eos, (str, type(None))):
            raise ValueError(f"bos_token / eos_token must be text, got {bos!r:.40} / {eos!r:.40}")
        bos_id = backend.token_to_id(bos) if bos else None
        eos_id = backend.token_to_id(eos) if eos else None
        gen = _read_json(folder / "generation_config.json")
        extra = gen.get("eos_token_id")
        extra = [] if extra is None else [extra] if isinstance(extra, int) else list(extra)
        if eos_id is None and extra:
            eos_id = extra[0]
        stops = None
        if eos_id is not None or extra:
            stops = {i for i in [eos_id, *extra] if i is not None}
            stops |= {i for i in map(backend.token_to_id, END_MARKERS) if i is not None}
        return cls(backend, bos_id=bos_id, eos_id=eos_id, stop_ids=stops, chat_template=template)

    # ------------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (added tokens included)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` lets the model's post-processor add BOS.

        Special-token text such as ``<|im_start|>`` is always matched as the special token.
        Pass ``add_special_tokens=False`` for a rendered chat prompt that already has its BOS.
        """
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; incomplete UTF-8 at the end shows as U+FFFD."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """Id of one vocabulary entry, or None."""
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Vocabulary entry (in its stored spelling) of one id, or None."""
        return self.backend.id_to_token(int(token_id))

    # ------------------------------------------------------------------ chat
    def encode_prompt(self, prompt, chat: bool = True, system: str | None = None) -> list[int]:
        """Token ids of a user prompt: through the chat template when `chat` and the model has
        one (with an optional system message), else plain; a list of ids passes through."""
        if not isinstance(prompt, str):
            return [int(t) for t in prompt]
        if chat and self.chat_template is not None:
            messages = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": prompt}]
            text = self.apply_chat_template(messages, add_generation_prompt=True)
            return self.encode(text, add_special_tokens=False)
        return self.encode(prompt)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True,
                            **kwargs: Any) -> str:
        """Render ``messages`` (dicts with ``role`` and ``content``) with the model's chat template.

        Renders the way ``transformers`` does (sandboxed Jinja2, ``trim_blocks``, ``lstrip_blocks``),
        so the text matches its ``apply_chat_template(..., tokenize=False)``, including any default
        system prompt the template injects.
        """
        if self._template is None:
            self._template = _compile_template(self.chat_template or CHATML_TEMPLATE)
        specials = {
            "bos_token": self.id_to_token(self.bos_id) if self.bos_id is not None else None,
            "eos_token": self.id_to_token(self.eos_id) if self.eos_id is not None else None,
        }
        return self._template.render(messages=[dict(m) for m in messages],
                                     add_generation_prompt=add_generation_prompt, **{**specials, **kwargs})

    # ------------------------------------------------------------------ streaming
    def stream_decoder(self, skip_special_tokens: bool = False) -> "StreamDecoder":
        """A fresh `StreamDecoder` for one generated sequence."""
        return StreamDecoder(self, skip_special_tokens)

    def decode_stream(self, ids: Iterable[int], skip_special_tokens: bool = False) -> Iterator[str]:
        """Yield text deltas as ``ids`` arrive; their concatenation equals ``decode(ids)``."""
        stream = self.stream_decoder(skip_special_tokens)
        for token_id in ids:
            delta = stream.push(token_id)
            if delta:
                yield delta
        tail = stream.flush()
        if tail:
            yield tail


class StreamDecoder:
    """Incremental decoder that never splits a multi-byte character.

    It decodes a short window of recent ids and emits only the text that grew past the previous
    window, holding back while the text ends in an incomplete UTF-8 sequence (U+FFFD).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window that gives context for the next delta
        self.read_offset = 0  # ids before this have been emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one id; return the new text it completes (possibly "")."""
        self.ids.append(int(token_id))
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(prefix):]
        return ""

    def flush(self) -> str:
        """Text still held back at the end of the sequence (may contain U+FFFD)."""
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix):]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot parse {path}: {exc}. Fix or delete the file.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(data).__name__}. Fix or "
                              "delete the file.")
    return data


def _compile_template(source: str):
    """Compile a chat template in the same Jinja2 environment transformers uses."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise CheckpointError(f"The chat template does not compile: {exc}.") from exc
