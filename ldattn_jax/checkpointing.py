"""orbax checkpoints of a training run: model + optimizer + step + grain iterator.

Layout: WORKDIR/checkpoints/<step>/{state, data_iter}/ managed by one
`orbax.checkpoint.CheckpointManager`:

- `state`: the pure-dict nnx state of (model, optimizer) — params, BatchNorm
  statistics, momentum and the optimizer's step count (which drives the lr);
- `data_iter`: grain's iterator state, one JSON per process.

Retention keeps the last `keep_checkpoints` steps plus the step with the best
validation AUC (orbax `LatestN` OR `BestN`); the AUC is stored as the
checkpoint's metrics, so "best" survives restarts and is chosen on the
validation split only. `restore_for_inference` gives evaluate/predict the model
of the 'best', 'latest' or a numbered step.
"""

from __future__ import annotations

import logging
import os

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

__all__ = [
    "BEST_METRIC",
    "checkpoint_dir",
    "make_manager",
    "restore_for_inference",
    "restore_train_state",
    "save_train_state",
]

BEST_METRIC = "val_auc"


class _QuietMissingMetrics(logging.Filter):
    # Periodic saves carry no validation metrics by design; orbax warns on each.
    def filter(self, record):
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietMissingMetrics())


def checkpoint_dir(workdir) -> epath.Path:
    """WORKDIR/checkpoints, absolute (orbax refuses relative paths); gs:// kept as is."""
    workdir = os.fspath(workdir)
    if "://" not in workdir:
        workdir = os.path.abspath(workdir)
    return epath.Path(workdir) / "checkpoints"


def make_manager(
    workdir,
    *,
    keep: int = 3,
    async_save: bool = True,
    read_only: bool = False,
    for_inference: bool = False,
) -> ocp.CheckpointManager:
    """The run's CheckpointManager (the same on every process).

    `for_inference` reads `state` with the PyTree handler (same on-disk format as
    the Standard one), which can restore the model part alone.
    """
    policy = pp.AnyPreservationPolicy(
        [
            pp.LatestN(n=max(1, keep)),
            pp.BestN(
                get_metric_fn=lambda m: m[BEST_METRIC],
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        best_fn=lambda m: m[BEST_METRIC],  # for best_step(); retention is the policy's
        best_mode="max",
        preservation_policy=policy,
        enable_async_checkpointing=async_save,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,
    )
    return ocp.CheckpointManager(
        checkpoint_dir(workdir),
        options=options,
        item_names=("state", "data_iter"),
        item_handlers={
            "state": ocp.PyTreeCheckpointHandler()
            if for_inference
            else ocp.StandardCheckpointHandler(),
            "data_iter": grain.checkpoint.CheckpointHandler(),
        },
    )


def save_train_state(
    manager: ocp.CheckpointManager, step: int, state, data_iter, metrics=None
) -> None:
    """Saves (asynchronously when enabled); `metrics` ({'val_auc': x}) mark eval steps."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(nnx.to_pure_dict(state)),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
        ),
        metrics=metrics,
        force=True,
    )


def _abstract_pure(abstract_state, shardings):
    """ShapeDtypeStructs carrying the target shardings, in pure-dict layout."""
    pure = nnx.to_pure_dict(abstract_state)
    pure_sh = nnx.to_pure_dict(shardings)
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), pure, pure_sh
    )


def restore_train_state(
    manager: ocp.CheckpointManager, step: int, abstract_state, shardings, data_iter
):
    """(state placed with `shardings`, data_iter positioned after `step` batches)."""
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract_pure(abstract_state, shardings)),
            data_iter=grain.checkpoint.CheckpointRestore(data_iter),
        ),
    )
    state = jax.tree.map(lambda x: x, abstract_state)  # a copy to fill in
    nnx.replace_by_pure_dict(state, restored["state"])
    return state, restored["data_iter"]


def _resolve_step(manager: ocp.CheckpointManager, which, workdir) -> int:
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(
            f"no checkpoint in {checkpoint_dir(workdir)}; train first with "
            f"python -m ldattn_jax.train --config CFG --workdir {workdir}"
        )
    if which == "latest":
        return manager.latest_step()
    if which == "best":
        step = manager.best_step()
        if step is None or step not in steps:
            step = manager.latest_step()
            logging.warning(
                "no checkpoint with a validation AUC in %s; using the latest (step %d)",
                workdir,
                step,
            )
        return step
    try:
        step = int(which)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {which!r}: expected 'best', 'latest' or a step") from e
    if step not in steps:
        raise FileNotFoundError(
            f"checkpoint step {step} is not in {checkpoint_dir(workdir)} (has {sorted(steps)})"
        )
    return step


def restore_for_inference(config, workdir, which="best"):
    """(model in eval mode, step) from WORKDIR/checkpoints; `which` = 'best' | 'latest' | int.

    Only the model part of the state is read; arrays land on the default device
    (the caller replicates or shards them for its own mesh).
    """
    from ldattn_jax.models.lda import build_model

    if not os.path.isdir(checkpoint_dir(workdir)) and not str(workdir).startswith("gs://"):
        raise FileNotFoundError(
            f"{checkpoint_dir(workdir)} does not exist; pass the --workdir of a training run"
        )
    manager = make_manager(workdir, read_only=True, async_save=False, for_inference=True)
    try:
        step = _resolve_step(manager, which, workdir)
        abstract_model = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
        graphdef, abstract_state = nnx.split(abstract_model)
        device = jax.local_devices()[0]
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(
                a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(device)
            ),
            nnx.to_pure_dict(abstract_state),
        )
        # Partial restore: only the model (item 0 of the (model, optimizer) state).
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item={0: target},
                    restore_args=ocp.checkpoint_utils.construct_restore_args({0: target}),
                    partial_restore=True,
                )
            ),
        )
    finally:
        manager.close()
    pure = restored["state"]
    pure = pure[0] if 0 in pure else pure["0"]
    nnx.replace_by_pure_dict(abstract_state, pure)
    model = nnx.merge(graphdef, abstract_state)
    model.eval()
    return model, int(step)
