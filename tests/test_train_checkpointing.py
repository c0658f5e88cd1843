"""orbax checkpoints: retention (last K + best val AUC), state + grain iterator round trip."""

import grain
import jax
import numpy as np
import pytest
from flax import nnx

from ldattn_jax import checkpointing


def _state(seed):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
    return nnx.split(model)


def _iterator():
    return iter(grain.MapDataset.range(100).shuffle(seed=0).batch(4).to_iter_dataset())


def _shardings(abstract):
    device = jax.local_devices()[0]
    return jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(device), abstract)


def test_keeps_last_k_plus_best_and_round_trips_state_and_iterator(tmp_path):
    graphdef, state = _state(0)
    it = _iterator()
    manager = checkpointing.make_manager(tmp_path, keep=2, async_save=True)
    aucs = {2: 0.9, 4: 0.6}
    saved = {}
    for step in range(1, 6):
        next(it)
        metrics = {"val_auc": aucs[step]} if step in aucs else None
        saved[step] = (jax.tree.map(np.asarray, state), it.get_state())
        checkpointing.save_train_state(manager, step, state, it, metrics)
        state = jax.tree.map(lambda x: x + 1.0, state)
    manager.wait_until_finished()
    # LatestN(2) keeps 4 and 5; BestN(1) keeps 2 (AUC 0.9), chosen on validation.
    assert manager.all_steps() == [2, 4, 5]
    assert manager.best_step() == 2

    _, abstract = _state(1)
    fresh = _iterator()
    restored, fresh = checkpointing.restore_train_state(
        manager, 2, abstract, _shardings(abstract), fresh
    )
    manager.close()
    for a, b in zip(jax.tree.leaves(saved[2][0]), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fresh.get_state() == saved[2][1]
    model = nnx.merge(graphdef, restored)
    assert model(np.ones((1, 3), np.float32)).shape == (1, 2)

    # A new manager (a restarted run) sees the same steps and the same best.
    again = checkpointing.make_manager(tmp_path, keep=2, read_only=True, async_save=False)
    assert again.latest_step() == 5 and again.best_step() == 2
    again.close()


def test_restore_for_inference_explains_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="--workdir of a training run"):
        checkpointing.restore_for_inference(None, str(tmp_path / "none"))
