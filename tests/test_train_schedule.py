"""The paper's step-halving schedule read at its boundaries, through the real optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldattn_jax.config_utils import training_defaults
from ldattn_jax.schedules import make_optimizer, make_schedule


def _lr_applied(tx, steps):
    """The lr the optimizer really applies at each step (grad 1, no momentum history)."""
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    out = []
    for _ in range(steps):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        out.append(float(-updates["w"]))
    return np.array(out)


def test_lr_halves_every_five_epochs():
    c = training_defaults()  # lr 3e-4, halved every 5 epochs
    sched = make_schedule(c, steps_per_epoch=10)
    assert float(sched(0)) == pytest.approx(3e-4)
    assert float(sched(49)) == pytest.approx(3e-4)  # last step of epoch 4
    assert float(sched(50)) == pytest.approx(1.5e-4)  # epoch 5
    assert float(sched(99)) == pytest.approx(1.5e-4)
    assert float(sched(100)) == pytest.approx(7.5e-5)  # epoch 10
    assert float(sched(150)) == pytest.approx(3.75e-5)  # epoch 15
    assert float(sched(199)) == pytest.approx(3.75e-5)  # last step of 20 epochs


def test_optimizer_applies_the_decayed_lr():
    c = training_defaults()
    c.momentum = 0.0  # so the update is exactly -lr * grad
    lrs = _lr_applied(make_optimizer(c, steps_per_epoch=2), 25)
    expected = 3e-4 * 0.5 ** (np.arange(25) // 10)
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)


def test_momentum_weight_decay_and_clipping():
    c = training_defaults()
    tx = make_optimizer(c, steps_per_epoch=100)
    lrs = _lr_applied(tx, 3)  # momentum 0.9 accumulates: 1, 1.9, 2.71 times lr
    np.testing.assert_allclose(lrs, 3e-4 * np.array([1.0, 1.9, 2.71]), rtol=1e-6)
    # config.nesterov: the step looks ahead along the momentum, g + mu * m_t with
    # m_t = mu * m_(t-1) + g: 1.9, 2.71, 3.439 times lr (one momentum step ahead).
    c.nesterov = True
    lrs = _lr_applied(make_optimizer(c, steps_per_epoch=100), 3)
    np.testing.assert_allclose(lrs, 3e-4 * np.array([1.9, 2.71, 3.439]), rtol=1e-6)
    c.nesterov = False

    c.momentum, c.weight_decay, c.grad_clip_norm = 0.0, 0.1, 1.0
    tx = make_optimizer(c, steps_per_epoch=100)
    params = {
        "dense": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)},
        "spatial": {
            "pos_embed": jnp.full((1, 3, 2), 2.0),
            "templates": jnp.full((2, 2), 2.0),
            "key_kernel": jnp.full((1, 2, 2), 2.0),
        },
    }
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["dense"]["kernel"] = jnp.full((2, 2), 10.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Clipped grad: global norm 20 → 1, so each kernel entry 0.5; decay adds 0.1 * 2
    # to kernels only: not biases/BatchNorm scales, nor the attention's position
    # tables and templates (embeddings, though 2-D and 3-D).
    np.testing.assert_allclose(updates["dense"]["kernel"], -3e-4 * (0.5 + 0.2), rtol=1e-6)
    np.testing.assert_allclose(updates["spatial"]["key_kernel"], -3e-4 * 0.2, rtol=1e-6)
    np.testing.assert_allclose(updates["dense"]["bias"], 0.0)
    for name in ("pos_embed", "templates"):
        np.testing.assert_allclose(updates["spatial"][name], 0.0)


def test_clipping_and_weight_decay_leave_the_state_layout_alone():
    # A resume may switch them (config_utils.check_resume_config allows it): the
    # checkpoint's optimizer state must be the same tree, laid out as chain(sgd)'s
    # (the layout of every checkpoint written with both off).
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    layouts = set()
    for clip, decay in [(0.0, 0.0), (1.0, 0.0), (0.0, 0.1), (1.0, 0.1)]:
        c = training_defaults()
        c.grad_clip_norm, c.weight_decay = clip, decay
        layouts.add(jax.tree.structure(make_optimizer(c, steps_per_epoch=10).init(params)))
    c = training_defaults()
    lr = make_schedule(c, 10)
    assert layouts == {jax.tree.structure(optax.chain(optax.sgd(lr, 0.9)).init(params))}
    c.optimizer = "adam"
    assert jax.tree.structure(make_optimizer(c, 10).init(params)) == jax.tree.structure(
        optax.chain(optax.adam(lr)).init(params)
    )


def test_schedule_rejects_empty_epochs():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_schedule(training_defaults(), 0)


def test_schedule_is_jittable_on_the_optimizer_count():
    sched = make_schedule(training_defaults(), steps_per_epoch=3)
    assert float(jax.jit(sched)(jnp.uint32(15))) == pytest.approx(1.5e-4)
    assert isinstance(optax.sgd(sched), optax.GradientTransformation)


def test_adam_option_uses_the_same_decaying_schedule():
    c = training_defaults()
    c.optimizer = "adam"
    # Adam's first update of a constant gradient is -lr * sign(grad) (bias-corrected),
    # so the applied lr reads off directly and must halve at the epoch boundary.
    lrs = _lr_applied(make_optimizer(c, steps_per_epoch=2), 12)
    np.testing.assert_allclose(lrs[:10], 3e-4, rtol=1e-4)
    np.testing.assert_allclose(lrs[10:], 1.5e-4, rtol=1e-4)
    c.optimizer = "rmsprop"
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        make_optimizer(c, steps_per_epoch=2)
