"""Bit allocation by predicted loss: the loss sensitivity of every linear's outputs (checked against transformers' own backward pass), and what the allocator does with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flightllm_overlay.compress import CompressionConfig, compress
from flightllm_overlay.compress.calibrate import HF_NAMES
from flightllm_overlay.compress.fisher import output_fisher
from flightllm_overlay.compress.mixed import allocate, candidates, score_options
from flightllm_overlay.compress.smooth import float_layers
from flightllm_overlay.errors import CompileError, FlightLLMError
from flightllm_overlay.model import load_checkpoint
from flightllm_overlay.model.testing import make_tiny_llama


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("fisher") / "tiny", seed=3)


def _transformers_fisher(folder, tokens, window):
    """The same statistic from transformers' LlamaForCausalLM: per nn.Linear, the sum over
    tokens of its output gradient squared (full backward hooks), summed next-token loss."""
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float64).eval()
    acc, handles = {}, []
    for i, layer in enumerate(model.model.layers):
        for ours, hf in HF_NAMES.items():
            module = layer.get_submodule(hf)

            def grab(_m, _gin, gout, key=(i, ours)):
                sq = (gout[0].reshape(-1, gout[0].shape[-1]) ** 2).sum(0).detach().numpy()
                acc[key] = sq + acc.get(key, 0.0)
            handles.append(module.register_full_backward_hook(grab))
    for s in range(0, len(tokens), window):
        ids = torch.as_tensor(tokens[s:s + window])[None]
        logits = model(ids).logits[0]
        torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum").backward()
    for h in handles:
        h.remove()
    return acc


def test_loss_sensitivity_is_transformers_output_gradient_squared(tiny_folder):
    ckpt = load_checkpoint(tiny_folder)
    tokens = np.random.default_rng(0).integers(0, ckpt.args.vocab_size, 96).tolist()
    ours = output_fisher(ckpt, float_layers(ckpt), tokens, window=48, progress=False)
    theirs = _transformers_fisher(tiny_folder, tokens, 48)
    assert set(ours) == set(theirs) == {(i, k) for i in range(ckpt.args.n_layers)
                                        for k in HF_NAMES}
    for key, f in ours.items():
        assert f.shape == theirs[key].shape
        assert (f > 0).all()
        np.testing.assert_allclose(f, theirs[key], rtol=1e-5, err_msg=str(key))
    # two windows: the sums of each (not one window over all tokens)
    one = output_fisher(ckpt, float_layers(ckpt), tokens[:48], window=48, progress=False)
    assert all((one[k] < ours[k]).all() for k in ours)


def test_loss_sensitivity_needs_tokens(tiny_folder):
    ckpt = load_checkpoint(tiny_folder)
    with pytest.raises(FlightLLMError, match="token ids"):
        output_fisher(ckpt, float_layers(ckpt), [1], progress=False)


def test_allocator_spends_bits_where_the_loss_is_sensitive():
    """Two identical linears, one whose outputs the loss barely sees: with the loss
    sensitivity the low bits go there; by relative output error the two are a tie."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    x = rng.standard_normal((256, 64))
    h = x.T @ x
    cands = candidates(64, (2, 4), (32,))
    sensitive = score_options(w, h, None, None, cands, fisher=np.full(32, 1.0))
    numb = score_options(w, h, None, None, cands, fisher=np.full(32, 1e-3))
    # the predicted loss is the output error weighted row by row
    rel = score_options(w, h, None, None, cands)
    for a, b, r in zip(sensitive, numb, rel):
        assert a.error == pytest.approx(1e3 * b.error)
        assert a.error == pytest.approx(r.error * float(((w.astype(np.float64) @ h) * w).sum()))
    pick = allocate([sensitive, numb], 3.0)          # one linear at 4 bits, one at 2
    assert [cands[i][0] for i in pick] == [4, 2]
    pick = allocate([numb, sensitive], 3.0)
    assert [cands[i][0] for i in pick] == [2, 4]
    # rows: a linear whose first rows matter pays for the error there, not elsewhere
    rows = np.r_[np.ones(16), np.zeros(16)]
    half = score_options(w, h, None, None, cands, fisher=rows)
    d = [(o.error, s.error) for o, s in zip(half, sensitive)]
    assert all(0 < e < full for e, full in d)


def test_pipeline_allocates_by_predicted_loss_and_says_so(tiny_folder, monkeypatch):
    ckpt = load_checkpoint(tiny_folder)
    cfg = CompressionConfig.flightllm().but(avg_bits=3.5, calib_tokens=128, group_choices=(32,))
    calls = []
    import flightllm_overlay.compress.pipeline as pipeline
    real = pipeline.output_fisher
    monkeypatch.setattr(pipeline, "output_fisher",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    by_loss = compress(ckpt, None, cfg, progress=False)
    assert calls == [1]
    assert by_loss.info["allocation"] == "fisher"
    assert "formats allocated by predicted loss" in by_loss.report()
    relative = compress(ckpt, None, cfg.but(allocation="relative"), progress=False)
    assert calls == [1]                               # no backward pass for 'relative'
    assert "each linear's relative output error" in relative.report()
    fmt = lambda cm: [(pw.bits, pw.group) for _, _, pw in cm.linears()]
    assert fmt(by_loss) != fmt(relative)              # the criterion decides something here
    for cm in (by_loss, relative):
        assert cm.totals()["code_bits"] <= 3.5 + 1e-9
    # nothing to choose (one format): no backward pass, no allocation line
    w8 = compress(ckpt, None, CompressionConfig.w8a8().but(calib_tokens=64), progress=False)
    assert calls == [1] and "allocation" not in w8.info
    assert "formats allocated" not in w8.report()


def test_unknown_allocation_is_a_clear_error():
    with pytest.raises(CompileError, match="unknown bit allocation 'hessian'"):
        CompressionConfig(allocation="hessian")
