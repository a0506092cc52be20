"""StreamingDemo headless: tokens stream in from a worker thread, Stop ends early, errors show."""
from __future__ import annotations

import html
import threading
import time

import pytest

import ipywidgets  # noqa: F401  (notebooks extra)

from flightllm_overlay.errors import ContextLengthError, FlightLLMError  # noqa: E402
from flightllm_overlay.runtime import Generator, Session, Token  # noqa: E402
from flightllm_overlay.widgets import StreamingDemo  # noqa: E402

PROMPT = "Hello, world!"
NO_STOP = {"stop_ids": ()}          # the random tiny model may emit <|im_end|>; never stop on it


@pytest.fixture(scope="module")
def gen(tiny_ckpt, tiny_program, sim_overlay):
    """The tiny random LLaMA (made in a tmp dir) on the overlay of a SimulatedU280 (conftest)."""
    with Session(sim_overlay, tiny_program) as session:
        yield Generator(session, tiny_ckpt.tokenizer)


def _wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def test_tokens_stream_into_text_and_output(gen):
    during = []

    def on_token(tok):
        # called in the worker thread while generating: the UI already shows this token
        during.append((demo.tokens if tok.id >= 0 else None, demo.text, demo.output.value,
                       demo.generate_button.disabled, demo.stop_button.disabled,
                       threading.current_thread() is threading.main_thread()))

    demo = StreamingDemo(gen, max_new_tokens=12, on_token=on_token, refresh_seconds=0.0, **NO_STOP)
    text = demo.run(PROMPT)
    summary = gen.stats.summary()
    expected = gen.generate_text(PROMPT, 12, temperature=0.0, **NO_STOP)

    assert demo.error is None, demo.error_box.value
    assert text == demo.text == expected
    assert demo.tokens == 12 and demo.finish_reason == "length"
    assert [d[0] for d in during if d[0] is not None] == list(range(1, 13))   # one per token
    assert all(html.escape(d[1]) + "</pre>" in d[2] for d in during)   # shown as it arrives
    assert during[-1][1] == expected                                # grew token by token
    assert all(d[3] and not d[4] for d in during)                   # Generate off, Stop on
    assert not any(d[5] for d in during)                            # generation is off-thread
    assert html.escape(expected) in demo.output.value
    assert demo.live.value.startswith("12 tokens,") and "tok/s (host)" in demo.live.value
    assert demo.stats.value == summary and "12 generated tokens" in demo.stats.value
    assert demo.tokens_per_second > 0


def test_stop_button_from_callback_stops_after_current_token(gen):
    def on_token(tok):
        if demo.tokens == 2:
            demo.stop_button.click()

    demo = StreamingDemo(gen, max_new_tokens=40, on_token=on_token, **NO_STOP)
    demo.run(PROMPT)
    assert demo.tokens == 2 < 40
    assert demo.finish_reason == "stopped" == gen.stats.finish_reason
    assert "(stopped)" in demo.live.value and demo.error is None


def test_stop_while_streaming_from_the_ui_thread(gen):
    demo = StreamingDemo(gen, max_new_tokens=150, **NO_STOP)
    demo.run(PROMPT, wait=False)
    _wait_until(lambda: demo.tokens >= 1)
    assert demo.running and demo.generate_button.disabled and not demo.stop_button.disabled
    demo.stop_button.click()
    assert demo.wait(30)
    assert 1 <= demo.tokens < 150 and demo.finish_reason == "stopped"


def test_generate_button_reenabled_after_finishing(gen):
    demo = StreamingDemo(gen, prompt=PROMPT, max_new_tokens=5, **NO_STOP)
    demo.generate_button.click()                       # the button starts a run, like a user
    assert demo.wait(30)
    assert demo.tokens == 5 and not demo.running
    assert not demo.generate_button.disabled and demo.stop_button.disabled
    demo.run(PROMPT)                                   # and it can run again
    assert demo.tokens == 5 and not demo.generate_button.disabled


def test_flightllm_error_is_shown_in_the_ui(gen):
    demo = StreamingDemo(gen, max_new_tokens=4, **NO_STOP)
    demo.run("word " * 400)                            # longer than the 256-token context
    assert isinstance(demo.error, ContextLengthError)
    assert "ContextLengthError" in demo.error_box.value and "context" in demo.error_box.value
    assert "Traceback" not in demo.error_box.value     # a user error: its message, not a trace
    assert demo.finish_reason == "error" and demo.text == ""
    assert not demo.generate_button.disabled and demo.stop_button.disabled
    demo.run(PROMPT)                                   # the next run clears the error
    assert demo.error is None and demo.error_box.value == "" and demo.tokens == 4


class _FakeGenerator:
    """Yields tokens on demand (gate) so thread interleavings are deterministic; no model."""

    def __init__(self, n=3, fail_after=None):
        self.n, self.fail_after = n, fail_after
        self.begin = threading.Semaphore(0)           # generate() starts (clears stop) on release
        self.gate = threading.Semaphore(0)            # one token per release
        self.stopped = threading.Event()
        self.stats = None

    def stop(self):
        self.stopped.set()

    def generate(self, prompt, max_new_tokens, **kw):
        self.begin.acquire()
        self.stopped.clear()                          # as Generator.generate does
        for i in range(min(self.n, max_new_tokens)):
            if i == self.fail_after:
                raise ValueError("simulated bug")
            self.gate.acquire()
            yield Token(i, f"t{i} ", i)
            if self.stopped.is_set():
                return


def test_other_exceptions_are_shown_with_traceback():
    fake = _FakeGenerator(n=5, fail_after=2)
    demo = StreamingDemo(fake)
    fake.begin.release()
    for _ in range(5):
        fake.gate.release()
    demo.run("x", timeout=30)
    assert isinstance(demo.error, ValueError) and demo.text == "t0 t1 "
    assert "Traceback" in demo.error_box.value and "simulated bug" in demo.error_box.value
    assert not demo.generate_button.disabled


def test_second_run_while_running_is_refused_and_stop_before_first_token_holds():
    fake = _FakeGenerator(n=5)
    demo = StreamingDemo(fake)
    demo.run("x", wait=False)
    with pytest.raises(FlightLLMError, match="already running"):
        demo.run("y", wait=False)
    demo.stop()                                        # pressed before generate() has started
    fake.begin.release()
    for _ in range(5):
        fake.gate.release()
    assert demo.wait(30)
    assert demo.text == "t0 " and demo.tokens == 1     # generate() cleared the flag; still stopped


def test_live_counter_agrees_with_the_statistics_when_a_stop_token_ends(gen):
    # make the greedy answer's 4th distinct token the stop token: 3 tokens shown, 4 sampled
    ids = [t.id for t in gen.generate("hello", 12, temperature=0.0, stop_ids=()) if t.id >= 0]
    stop = next(i for i in ids if ids.index(i) >= 3)
    shown = ids.index(stop)
    demo = StreamingDemo(gen, max_new_tokens=12, temperature=0.0, stop_ids={stop})
    demo.run("hello")
    assert demo.finish_reason == "stop token" and demo.tokens == shown
    assert gen.stats.generated_tokens == shown + 1        # the stop token is sampled, not shown
    assert demo.live.value.startswith(f"{shown} tokens + the stop token")
    assert f"{shown + 1} generated tokens" in demo.stats.value
