"""The numbers training optimises and evaluation reports, on stand-in models.

Label 1 = fake throughout: the loss weights a record by its own class's
weight, and every score that leaves the model is P(fake), computed in eval
mode (BatchNorm running statistics, not the batch's).
"""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from ldattn_jax import evaluate, train
from ldattn_jax.smoke import tiny_model_config


def test_class_weighted_cross_entropy_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]], np.float32)
    labels = np.array([0, 1, 1, 1])
    class_w = np.array([3.0, 0.5], np.float32)  # real, fake (balance='loss_weight')
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -log_p[np.arange(4), labels]
    w = np.array([3.0, 0.5, 0.5, 0.5])  # each record weighs its own class's weight
    got = train._cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(class_w))
    assert float(got) == pytest.approx(float((w * ce).sum() / w.sum()), rel=1e-6)
    ones = train._cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.ones(2))
    assert float(ones) == pytest.approx(float(ce.mean()), rel=1e-6)


class _Scorer(nnx.Module):
    """A model-shaped stand-in: frames [B, T, S, S, 3] -> (logits [B, 2], maps).

    Its BatchNorm makes train-mode and eval-mode outputs differ, and only frame
    0 is read, like the spatial variants.
    """

    def __init__(self, rngs):
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.lin = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, frames):
        x = frames[:, 0].astype(jnp.float32).mean(axis=(1, 2)) / 255.0
        return self.lin(self.bn(x)), {}


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 4, 4, 3), np.uint8)


def _p_fake(logits):
    e = np.exp(np.asarray(logits, np.float64))
    return e[:, 1] / e.sum(-1)


def _p_fake_reference(model, frames):
    model.eval()
    return _p_fake(model(jnp.asarray(frames))[0])


def test_validation_scores_are_eval_mode_p_fake():
    model = _Scorer(nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    frames = _frames(6)
    margin = np.asarray(train.make_eval_step(graphdef)(state, jnp.asarray(frames)), np.float64)
    want = _p_fake_reference(model, frames)
    np.testing.assert_allclose(evaluate.sigmoid(margin), want, rtol=1e-5)


def test_predictor_scores_are_eval_mode_p_fake_row_by_row():
    # Evaluate/predict score through Predictor: P(fake) per input row, the padding
    # of a short batch dropped, BatchNorm in eval mode whatever the model's mode.
    model = _Scorer(nnx.Rngs(0))  # left in train mode
    config = ml_collections.ConfigDict(
        {"model": tiny_model_config("xception"), "batch_size": 4, "mesh": [("data", 2)]}
    )
    predictor = evaluate.Predictor(model, config)
    frames = _frames(3, seed=1)
    scores, maps = predictor(frames)
    assert scores.shape == (3,) and maps == {}
    np.testing.assert_allclose(scores, _p_fake_reference(model, frames), rtol=1e-5)
    model.train()  # the check is able to fail: batch statistics give other scores
    assert not np.allclose(scores, _p_fake(model(jnp.asarray(frames))[0]), atol=1e-3)


def test_predictors_of_one_architecture_share_one_compile_and_keep_their_own_weights():
    # demo/ablation evaluate val, test and a held-out build in one process: the
    # forward pass compiles once per architecture, not once per Predictor.
    config = ml_collections.ConfigDict(
        {"model": tiny_model_config("xception"), "batch_size": 4, "mesh": [("data", 2)]}
    )
    models = [_Scorer(nnx.Rngs(seed)) for seed in (10, 11)]
    first, second = (evaluate.Predictor(m, config) for m in models)
    assert first._forward is second._forward
    frames = _frames(4, seed=2)
    scores = [first(frames)[0]]
    compiled = first._forward._cache_size()
    scores.append(second(frames)[0])
    assert first._forward._cache_size() == compiled  # the second reused the compile
    for got, model in zip(scores, models, strict=True):
        np.testing.assert_allclose(got, _p_fake_reference(model, frames), rtol=1e-5)
    assert not np.allclose(scores[0], scores[1], atol=1e-3)  # each its own weights

    class _Wider(_Scorer):  # another architecture: its own forward
        def __init__(self, rngs):
            super().__init__(rngs)
            self.lin = nnx.Linear(3, 2, use_bias=False, rngs=rngs)

    assert evaluate.Predictor(_Wider(nnx.Rngs(0)), config)._forward is not first._forward


def test_a_predictor_made_after_the_stencil_choice_changed_traces_anew(monkeypatch):
    # LDATTN_STENCILS is read while tracing: a shared forward must not keep the
    # window ops of the choice in force when another Predictor was made.
    config = ml_collections.ConfigDict(
        {"model": tiny_model_config("xception"), "batch_size": 4, "mesh": [("data", 2)]}
    )
    monkeypatch.setenv("LDATTN_STENCILS", "on")
    on = evaluate.Predictor(_Scorer(nnx.Rngs(0)), config)
    monkeypatch.setenv("LDATTN_STENCILS", "off")
    off = evaluate.Predictor(_Scorer(nnx.Rngs(0)), config)
    assert on._forward is not off._forward
    monkeypatch.setenv("LDATTN_STENCILS", "on")
    assert evaluate.Predictor(_Scorer(nnx.Rngs(1)), config)._forward is on._forward
