"""Tokenizer wrapper on the tiny vocabulary: transformers parity, chat templates, streaming decode."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightllm_overlay.model import Tokenizer
from flightllm_overlay.model.testing import make_tiny_llama
from flightllm_overlay.model.tokenizer import CHATML_TEMPLATE

import transformers  # the independent oracle (tests extra); missing means a broken install

TEXTS = ["Hello, world!", "In 2024: 8 GB at 225 MHz", "héllo wörld 日本語 🤖", "<|im_start|>user\nhi<|im_end|>\n",
         "  two  spaces\n\n\ttab", "don't stop", ""]
CHAT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(folder):
    return Tokenizer.from_folder(folder)


def test_ids_match_transformers(tok, folder):
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert tok.encode(text) == hf.encode(text), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>")[0] == 1 == tok.bos_id and tok.eos_id == 2
    assert tok.stop_ids == {0, 2}
    assert tok.encode("12345") == [tok.token_to_id(c) for c in "12345"]  # digits split one by one


@pytest.mark.parametrize("gen", [True, False])
def test_chat_template_matches_transformers(tok, folder, gen):
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    for msgs in (CHAT, [{"role": "system", "content": "Be brief."}] + CHAT):
        ours = tok.apply_chat_template(msgs, add_generation_prompt=gen)
        assert ours == hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    assert ours.endswith("<|im_start|>assistant\n") == gen


MULTILINE_TEMPLATE = """{% for message in messages %}
  {% if message['role'] == 'user' %}
<<{{ message['content'] | upper }}>>
  {% else %}
[{{ message['content'] }}]
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}{{ bos_token }}{% endif %}"""


def test_template_whitespace_rules_match_transformers(tok, folder):
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    custom = Tokenizer(tok.backend, bos_id=1, eos_id=2, chat_template=MULTILINE_TEMPLATE)
    ours = custom.apply_chat_template(CHAT)
    assert ours == hf.apply_chat_template(CHAT, chat_template=MULTILINE_TEMPLATE, tokenize=False,
                                          add_generation_prompt=True)
    assert ours.endswith("<<AND 3+3?>>\n<|im_start|>")


def test_loads_from_file_path_and_chat_template_jinja(folder, tmp_path):
    import shutil

    copy = shutil.copytree(folder, tmp_path / "copy")
    (copy / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }};{% endfor %}")
    tok = Tokenizer.from_folder(copy / "tokenizer.json")
    assert tok.apply_chat_template(CHAT) == "What is 2+2?;4;And 3+3?;"
    assert tok.encode("hi") == Tokenizer.from_folder(folder).encode("hi")


def test_chatml_fallback(tok):
    bare = Tokenizer(tok.backend, bos_id=1, eos_id=2)
    assert bare.chat_template is None
    text = bare.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert "<|im_start|>" in CHATML_TEMPLATE


def test_stream_holds_back_partial_characters(tok):
    ids = tok.encode("a🤖b日")
    assert len(ids) > 4  # the emoji and the CJK character are several byte tokens each
    deltas = list(tok.decode_stream(ids))
    assert "".join(deltas) == "a🤖b日"
    assert all("\ufffd" not in d for d in deltas)
    stream = tok.stream_decoder()
    pushed = [stream.push(i) for i in ids]
    assert "" in pushed  # some ids complete no character yet
    assert "".join(pushed) + stream.flush() == "a🤖b日"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=30))
def test_stream_concatenation_equals_decode(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    deltas = list(tok.decode_stream(ids))
    assert "".join(deltas) == tok.decode(ids) == text
    assert all("\ufffd" not in d for d in deltas)


def test_stream_flushes_incomplete_tail(tok):
    ids = tok.encode("🤖")[:-1]  # cut the last byte of a 4-byte character
    deltas = list(tok.decode_stream(ids))
    assert "".join(deltas) == tok.decode(ids) and deltas[-1].endswith("\ufffd")
