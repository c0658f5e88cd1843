"""What a train step reports and how the mesh splits the work, on stand-in models.

The metrics of a step are compared with an independent computation (jax.grad
of a pure loss); the mesh and shardings are read off the arrays jax places on
the 8 simulated CPU devices.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from ldattn_jax import sharding, train
from ldattn_jax.config_utils import ConfigError


class _Net(nnx.Module):
    """frames [B, T, S, S, 3] -> (logits [B, 2], maps); a BatchNorm carries batch stats."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.out = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, frames):
        x = frames[:, 0].astype(jnp.float32).mean(axis=(1, 2)) / 255.0
        return self.out(jax.nn.relu(self.bn(self.lin(x)))), {}


def test_train_step_metrics_describe_the_update_it_made():
    model = _Net(nnx.Rngs(0))
    model.train()
    schedule = optax.piecewise_constant_schedule(0.5, {1: 0.1})  # count 0 -> 0.5
    optimizer = nnx.Optimizer(model, optax.sgd(schedule), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    rng = np.random.default_rng(0)
    batch = {"frames": jnp.asarray(rng.integers(0, 256, (8, 1, 4, 4, 3), np.uint8))}
    # Reference: the train-mode forward by hand (BatchNorm on batch statistics).
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    x = np.asarray(batch["frames"][:, 0], np.float32).mean(axis=(1, 2)) / 255.0

    def forward(p):
        h = x @ p["lin"]["kernel"] + p["lin"]["bias"]
        mu, var = h.mean(0), h.var(0)
        h = (h - mu) / jnp.sqrt(var + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
        return jax.nn.relu(h) @ p["out"]["kernel"] + p["out"]["bias"]

    # Labels the model gets 6 of 8 right: an accuracy that is not its complement.
    labels = np.argmax(np.asarray(forward(params)), -1).astype(np.int32)
    labels[:2] = 1 - labels[:2]
    batch["label"] = jnp.asarray(labels)

    def loss(p):
        logits = forward(p)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return ce.mean(), logits

    (ref_loss, _), grads = jax.value_and_grad(loss, has_aux=True)(params)
    g_flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])
    new_params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    p_flat = np.concatenate([np.ravel(p) for p in jax.tree.leaves(new_params)])

    step = jax.jit(train.make_train_step(graphdef, schedule))
    new_state, m = step(state, batch, jnp.ones(2, jnp.float32))
    assert float(m["loss"]) == pytest.approx(float(ref_loss), rel=1e-6)
    assert float(m["lr"]) == pytest.approx(0.5)  # the lr this update used (count 0)
    assert float(m["acc"]) == pytest.approx(0.75)
    assert float(m["grad_norm"]) == pytest.approx(float(np.linalg.norm(g_flat)), rel=1e-5)
    # The parameters' norm after the update, BatchNorm statistics not included.
    assert float(m["param_norm"]) == pytest.approx(float(np.linalg.norm(p_flat)), rel=1e-5)
    got = nnx.state(nnx.merge(graphdef, new_state)[0], nnx.Param)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 nnx.to_pure_dict(got), new_params)  # fmt: skip


def _config(mesh):
    return ml_collections.ConfigDict({"mesh": mesh})


def test_mesh_axes_fill_the_devices():
    assert jax.device_count() == 8
    mesh = sharding.make_mesh(_config([("data", -1), ("fsdp", 2)]))
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    # A missing axis is size 1, so the batch spec can always name both axes.
    assert dict(sharding.make_mesh(_config([("data", 2)])).shape) == {"data": 2, "fsdp": 1}
    with pytest.raises(ConfigError, match="at most one axis may be -1"):
        sharding.make_mesh(_config([("data", -1), ("fsdp", -1)]))
    with pytest.raises(ConfigError, match="not divisible"):
        sharding.make_mesh(_config([("data", -1), ("fsdp", 3)]))


def test_the_batch_is_split_over_data_and_fsdp_devices():
    # FSDP devices see different examples too: 8 rows on a 4 x 2 mesh put one
    # distinct row on every device, none replicated.
    mesh = sharding.make_mesh(_config([("data", 4), ("fsdp", 2)]))
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    arr = sharding.shard_batch(mesh, {"x": rows})["x"]
    np.testing.assert_array_equal(np.asarray(arr), rows)
    shards = [np.asarray(s.data) for s in arr.addressable_shards]
    assert len(shards) == 8 and all(s.shape == (1, 3) for s in shards)
    assert sorted(int(s[0, 0]) for s in shards) == list(range(0, 24, 3))
    with pytest.raises(ValueError, match="multiple of 8"):
        sharding.shard_batch(mesh, {"x": rows[:6]})


def test_fsdp_splits_the_largest_divisible_dimension_of_large_arrays_only():
    mesh = sharding.make_mesh(_config([("data", 4), ("fsdp", 2)]))
    tree = {
        "big": jax.ShapeDtypeStruct((6, 10, 3), jnp.float32),  # 180 >= 100: split dim 1 (10)
        "odd_largest": jax.ShapeDtypeStruct((4, 9, 5), jnp.float32),  # 9 odd: split dim 0
        "small": jax.ShapeDtypeStruct((8, 8), jnp.float32),  # 64 < 100: replicated
        "indivisible": jax.ShapeDtypeStruct((5, 7, 3), jnp.float32),
    }
    specs = {k: s.spec for k, s in sharding.param_shardings(mesh, tree, min_size=100).items()}
    assert specs == {
        "big": P(None, "fsdp", None),
        "odd_largest": P("fsdp", None, None),
        "small": P(),
        "indivisible": P(),
    }
    # Without an fsdp axis every parameter is replicated.
    flat = sharding.make_mesh(_config([("data", -1)]))
    assert all(s.spec == P() for s in sharding.param_shardings(flat, tree, 1).values())
