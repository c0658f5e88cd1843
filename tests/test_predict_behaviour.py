"""What evaluate/predict score with: `checkpointing.restore_for_inference` restores the
chosen step's parameters and BatchNorm statistics, in eval mode."""

import jax
import numpy as np
from flax import nnx
from test_train_helpers import flat_params, tiny_config

from ldattn_jax import checkpointing
from ldattn_jax.models.lda import build_model


def _grain_iter():
    import grain

    return iter(grain.MapDataset.range(8).batch(2).to_iter_dataset())


def test_restore_for_inference_gives_the_chosen_steps_weights_and_statistics_in_eval_mode(
    tmp_path,
):
    config = tiny_config(str(tmp_path / "unused"), "--config.model.name=lda_st")
    # The model's structure without its (slow) initialisation: every array is filled
    # below, BatchNorm's running mean/var too, with other values at each step.
    graphdef, abstract = nnx.split(
        nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    )
    head = nnx.Linear(2, 2, rngs=nnx.Rngs(1))  # stands in for the optimizer: not restored
    manager = checkpointing.make_manager(str(tmp_path), keep=3, async_save=False)
    rng = np.random.default_rng(0)
    saved = {}
    it = _grain_iter()
    for step, auc in ((2, 0.9), (4, 0.5)):
        state = jax.tree.map(lambda a: rng.uniform(0.5, 1.5, a.shape).astype(a.dtype), abstract)
        model = nnx.merge(graphdef, state)
        model.train()  # as training saves it
        saved[step] = {
            "param": flat_params(nnx.state(model, nnx.Param)),
            "stats": flat_params(nnx.state(model, nnx.BatchStat)),
        }
        next(it)
        checkpointing.save_train_state(
            manager, step, nnx.state((model, head)), it, {"val_auc": auc}
        )
    manager.close()
    assert saved[2]["stats"], "the model has BatchNorm statistics"

    for which, step in (("best", 2), (4, 4)):
        restored, got = checkpointing.restore_for_inference(config, str(tmp_path), which)
        assert got == step
        params = flat_params(nnx.state(restored, nnx.Param))
        stats = flat_params(nnx.state(restored, nnx.BatchStat))
        assert params.keys() == saved[step]["param"].keys()
        assert stats.keys() == saved[step]["stats"].keys()
        for k, v in saved[step]["param"].items():
            np.testing.assert_array_equal(params[k], v, err_msg=k)
        for k, v in saved[step]["stats"].items():
            np.testing.assert_array_equal(stats[k], v, err_msg=k)
        # Eval mode: every BatchNorm normalises with its running statistics and
        # dropout is off, so a video's score does not depend on its batch.
        bns = [m for _, m in nnx.iter_modules(restored) if isinstance(m, nnx.BatchNorm)]
        assert bns and all(m.use_running_average for m in bns)
        drops = [m for _, m in nnx.iter_modules(restored) if isinstance(m, nnx.Dropout)]
        assert all(m.deterministic for m in drops)
