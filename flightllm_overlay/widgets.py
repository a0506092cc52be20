"""StreamingDemo: an ipywidgets UI streaming a Generator's tokens live, with Stop and tokens/s."""
from __future__ import annotations

import html
import threading
import time
import traceback

try:
    import ipywidgets as widgets
except ImportError as exc:                       # widgets are optional: only notebooks need them
    raise ImportError("flightllm_overlay.widgets needs ipywidgets (and IPython): "
                      "pip install 'flightllm_overlay[notebooks]'") from exc

from .errors import FlightLLMError

__all__ = ["StreamingDemo"]


class StreamingDemo:
    """Prompt box, Generate/Stop buttons, sampling controls and a live token stream.

    The widget holds no model logic: it calls ``generator.generate(prompt, max_new_tokens,
    temperature=..., **generate_kw)`` in a background thread, appends each token's text to the
    output, and reads ``generator.stats.summary()`` when the generation ends.  Stop calls
    ``generator.stop()``, which ends the generation after the current token.

    Parameters
    ----------
    generator : flightllm_overlay.runtime.Generator
        Anything with ``generate(prompt, max_new_tokens, **kw)`` yielding tokens that have ``.id``
        and ``.text``, a thread-safe ``stop()`` and ``stats.summary()``.
    prompt : str
        Initial text of the prompt box.
    max_new_tokens : int
        Initial value of the max-new-tokens control.
    temperature : float
        Initial temperature (0 = greedy).
    on_token : callable(Token), optional
        Called in the worker thread after each token has been added to the output.
    refresh_seconds : float
        Shortest interval between two refreshes of the output while tokens stream.
    **generate_kw
        Passed on to ``generator.generate`` (``top_k``, ``top_p``, ``seed``, ``stop_ids``, ``chat``).

    Headless use (tests, scripts): ``demo.run(prompt)`` generates and waits; ``demo.text`` is the
    output so far, ``demo.tokens`` the number of tokens, ``demo.tokens_per_second`` the host decode
    rate, ``demo.error`` the exception that ended the last generation (or None).
    """

    def __init__(self, generator, prompt: str = "", max_new_tokens: int = 64,
                 temperature: float = 0.0, on_token=None, refresh_seconds: float = 0.05,
                 **generate_kw):
        self.generator = generator
        self.on_token = on_token
        self.refresh_seconds = refresh_seconds
        self.generate_kw = generate_kw
        self.error: BaseException | None = None
        self.finish_reason = ""
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._pieces: list = []
        self._n_tokens, self._t_start, self._t_first, self._t_last = 0, 0.0, 0.0, 0.0
        self._last_refresh = 0.0

        limit = max(int(getattr(generator, "context_length", 2048)) - 1, 1)
        self.prompt = widgets.Textarea(value=prompt, placeholder="Type a prompt",
                                       description="Prompt", rows=3,
                                       layout=widgets.Layout(width="100%"))
        self.max_new_tokens = widgets.IntSlider(value=min(max_new_tokens, limit), min=1,
                                                max=limit, description="max tokens")
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                               description="temperature")
        self.generate_button = widgets.Button(description="Generate", button_style="primary",
                                              icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="warning",
                                          icon="stop", disabled=True)
        self.output = widgets.HTML(value=_pre(""))
        self.live = widgets.Label(value="idle")
        self.stats = widgets.Label(value="")
        self.error_box = widgets.HTML(value="")
        self.generate_button.on_click(self._on_generate_click)
        self.stop_button.on_click(lambda _button: self.stop())
        self.widget = widgets.VBox([
            self.prompt,
            widgets.HBox([self.max_new_tokens, self.temperature]),
            widgets.HBox([self.generate_button, self.stop_button, self.live]),
            self.output, self.stats, self.error_box])

    # -- what it shows -----------------------------------------------------------------------------
    @property
    def text(self) -> str:
        """The generated text so far (all of it once the generation has ended)."""
        with self._lock:
            return "".join(self._pieces)

    @property
    def tokens(self) -> int:
        """Tokens generated so far in the current (or last) generation."""
        with self._lock:
            return self._n_tokens

    @property
    def tokens_per_second(self) -> float:
        """Host decode rate: tokens after the first over the time since the first (0 before two).

        On the simulated U280 this is the simulator's speed, not the card's."""
        with self._lock:
            n, dt = self._n_tokens, self._t_last - self._t_first
        return (n - 1) / dt if n > 1 and dt > 0 else 0.0

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def display(self):
        """Show the UI in the notebook."""
        from IPython.display import display
        display(self.widget)

    def _ipython_display_(self):
        self.display()

    # -- control -----------------------------------------------------------------------------------
    def run(self, prompt: str | None = None, wait: bool = True, timeout: float | None = None) -> str:
        """Generate from `prompt` (default: the prompt box) in the background thread.

        With `wait`, block until it ends (or `timeout` seconds) and return the text; an error is
        shown in the UI and kept in `self.error`, not raised.  Raises FlightLLMError if a
        generation is already running.
        """
        if prompt is not None:
            self.prompt.value = prompt
        self._start(self.prompt.value, int(self.max_new_tokens.value),
                    float(self.temperature.value))
        if wait:
            self.wait(timeout)
        return self.text

    def stop(self) -> None:
        """What the Stop button does: ask the generator to stop after the current token."""
        self._stop_requested.set()
        self.generator.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running generation ends; False if `timeout` passed first."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def close(self) -> None:
        """Stop any generation, wait for it, and close the widgets."""
        if self.running:
            self.stop()
            self.wait()
        self.widget.close()

    # -- the worker thread -------------------------------------------------------------------------
    def _on_generate_click(self, _button) -> None:
        if not self.running:                 # the button is disabled while running; be safe anyway
            self._start(self.prompt.value, int(self.max_new_tokens.value),
                        float(self.temperature.value))

    def _start(self, prompt: str, max_new_tokens: int, temperature: float) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise FlightLLMError("a generation is already running: press Stop or wait for it")
            self._pieces, self._n_tokens = [], 0
            self._t_start, self._t_first, self._t_last = time.perf_counter(), 0.0, 0.0
            self.error, self.finish_reason = None, ""
            self._stop_requested.clear()
            self._thread = threading.Thread(target=self._work, name="StreamingDemo",
                                            args=(prompt, max_new_tokens, temperature),
                                            daemon=True)
        self.generate_button.disabled, self.stop_button.disabled = True, False
        self.output.value, self.stats.value, self.error_box.value = _pre(""), "", ""
        self.live.value = "prefill..."
        self._thread.start()

    def _work(self, prompt: str, max_new_tokens: int, temperature: float) -> None:
        try:
            for token in self.generator.generate(prompt, max_new_tokens, temperature=temperature,
                                                 **self.generate_kw):
                self._add(token)
                if self._stop_requested.is_set():
                    # Stop pressed before generate() started clears the generator's flag: ask again
                    self.generator.stop()
            stats = getattr(self.generator, "stats", None)
            self.finish_reason = getattr(stats, "finish_reason", "") or "done"
            self.stats.value = stats.summary() if stats is not None else ""
        except FlightLLMError as exc:
            self._fail(exc, f"{type(exc).__name__}: {exc}")
        except Exception as exc:            # a bug, not a user error: show it all, never lose it
            self._fail(exc, "".join(traceback.format_exception(type(exc), exc,
                                                               exc.__traceback__)))
        finally:
            self._refresh(force=True)
            self.generate_button.disabled, self.stop_button.disabled = False, True

    def _add(self, token) -> None:
        now = time.perf_counter()
        with self._lock:
            self._pieces.append(token.text)
            if getattr(token, "id", 0) >= 0:          # id -1: text flushed at the end, no token
                self._n_tokens += 1
                if self._n_tokens == 1:
                    self._t_first = now
                self._t_last = now
        self._refresh()
        if self.on_token is not None:
            self.on_token(token)

    def _fail(self, exc: BaseException, message: str) -> None:
        self.error, self.finish_reason = exc, "error"
        self.error_box.value = (f"<pre style='color:#b00020; white-space:pre-wrap; margin:0'>"
                                f"{html.escape(message)}</pre>")

    def _refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_refresh < self.refresh_seconds:
            return
        self._last_refresh = now
        self.output.value = _pre(self.text)
        n, rate = self.tokens, self.tokens_per_second
        state = f" ({self.finish_reason})" if self.finish_reason else ""
        # the stop token is sampled (the statistics count it) but not shown: say so, so that the
        # live line and the statistics line agree
        stop = " + the stop token" if self.finish_reason == "stop token" else ""
        self.live.value = f"{n} tokens{stop}, {rate:.1f} tok/s (host){state}"


def _pre(text: str) -> str:
    return f"<pre style='white-space:pre-wrap; margin:0'>{html.escape(text)}</pre>"
