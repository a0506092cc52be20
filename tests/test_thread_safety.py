"""One overlay used from several threads: runs are serialised, every thread gets the tokens it
would get alone; driver calls with bad arguments give clear errors."""
from __future__ import annotations

import threading

import pytest

from flightllm_overlay.errors import ArgumentError, FlightLLMError
from flightllm_overlay.runtime import Generator, Session

PROMPTS = ([5, 17, 42, 7], [100, 3, 250, 9, 11])


def _greedy(gen, prompt, n=12):
    return [t.id for t in gen.generate(prompt, n, temperature=0.0, stop_ids=[])]


def test_two_generators_on_one_overlay_from_two_threads(sim_overlay, tiny_program, tiny_ckpt):
    """Finding 3: two threads, each with its own Session and Generator on one overlay, used to
    get wrong tokens with no error.  They must equal the tokens of running one after the other."""
    with Session(sim_overlay, tiny_program) as sa, Session(sim_overlay, tiny_program) as sb:
        gens = [Generator(sa, tiny_ckpt.tokenizer), Generator(sb, tiny_ckpt.tokenizer)]
        alone = [_greedy(g, p) for g, p in zip(gens, PROMPTS)]
        assert alone[0] != alone[1]
        for _ in range(2):
            got, errors = [None, None], []
            barrier = threading.Barrier(2)

            def work(i):
                try:
                    barrier.wait()
                    got[i] = _greedy(gens[i], PROMPTS[i])
                except Exception as exc:       # noqa: BLE001  reported below
                    errors.append(exc)
            threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert errors == [] and got == alone


@pytest.mark.parametrize("call", [
    lambda ol, img, ch: ol.run(img, -1, 1, ch),
    lambda ol, img, ch: ol.run(img, 0, 2**32, ch),
    lambda ol, img, ch: ol.run(img, 0.5, 1, ch),
    lambda ol, img, ch: ol.run(img, 0, 1, ch, timeout=-1),
    lambda ol, img, ch: ol.run(img, 0, 1, ch, timeout=float("nan")),
    lambda ol, img, ch: ol.run(img, 0, 1, [1, 2]),
    lambda ol, img, ch: ol.run("not a buffer", 0, 1, ch),
    lambda ol, img, ch: ol.run(-64, 0, 1, ch),
    lambda ol, img, ch: ol.scheduler.read(-4),
    lambda ol, img, ch: ol.scheduler.read(6),
    lambda ol, img, ch: ol.scheduler.read(1 << 40),
    lambda ol, img, ch: ol.scheduler.write(0x10, -1),
    lambda ol, img, ch: ol.scheduler.write(0x10, 2**32),
    lambda ol, img, ch: ol.scheduler.write_arg("pos", "7"),
])
def test_driver_calls_with_bad_arguments_give_clear_errors(sim_overlay, tiny_program, call):
    """Finding 12: bad arguments reached pynq and came back as its raw errors."""
    with Session(sim_overlay, tiny_program) as s:
        _, image = s.image("decode", 1)
        with pytest.raises(FlightLLMError) as err:
            call(sim_overlay, image, s.channels)
        assert isinstance(err.value, (ArgumentError, FlightLLMError))
        assert s.run("decode", [3], 0).shape == (1, tiny_program.vocab_size)   # still works
