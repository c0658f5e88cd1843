"""orbax checkpoints of a training run: model + optimizer + step + grain iterator.

Layout: WORKDIR/checkpoints/<step>/{state, data_iter}/ managed by one
`orbax.checkpoint.CheckpointManager`:

- `state`: the pure-dict nnx state of (model, optimizer) — params, BatchNorm
  statistics, momentum and the optimizer's step count (which drives the lr);
- `data_iter`: grain's iterator state, one JSON per process (grain's own
  handler and file format; restoring carries the position over when
  `data.worker_count` or the number of processes changed, see `DataIterHandler`).

Retention keeps the last `keep_checkpoints` steps plus the step with the best
validation AUC (orbax `LatestN` OR `BestN`); the AUC is stored as the
checkpoint's metrics, so "best" survives restarts and is chosen on the
validation split only. `restore_for_inference` gives evaluate/predict the model
of the 'best', 'latest' or a numbered step.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from ldattn_jax import input_pipeline
from ldattn_jax.config_utils import ConfigError

__all__ = [
    "BEST_METRIC",
    "CheckpointDamaged",
    "DataIterHandler",
    "IteratorPosition",
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


def _write_each_array_from_one_replica() -> None:
    """Turns off orbax's replica-parallel saving of jax.Arrays, process-wide.

    With it on (orbax's default unless JAX_PLATFORMS names a GPU), every
    replica of a replicated parameter writes a slice of it, and orbax
    compiles a slice program per parameter shape and device at the first
    save of each process. Measured on the suite's 8 simulated CPU devices,
    demo-size LDA-ST: first save 17.8 s, later ones 0.6-0.9 s; with one
    replica writing each array 0.38 s and 0.2 s (single-device runs slice
    nothing). Our whole state is ~180 MB at the paper's size, too little for
    parallel writes to pay for those compiles at every start and resume.
    Same format either way (only a replicated array's chunking differs):
    checkpoints written either way restore either way.
    """
    registered = ocp.type_handlers.get_type_handler(jax.Array)
    if not getattr(registered, "_use_replica_parallel", False):
        return
    # A copy: every other setting of the registered handler (orbax's, or one a
    # user registered before importing this module) is kept.
    handler = copy.copy(registered)
    handler._use_replica_parallel = False
    quiet = _QuietOverride()  # orbax warns of any override; this one is meant
    logging.getLogger("absl").addFilter(quiet)
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        logging.getLogger("absl").removeFilter(quiet)


class _QuietOverride(logging.Filter):
    def filter(self, record):
        return "overriding jax.Array" not in record.getMessage()


_write_each_array_from_one_replica()


class ProcessCountMismatch(FileNotFoundError):
    """A checkpoint's iterator states that cannot resume this run's processes."""


class DataIterHandler(grain.checkpoint.CheckpointHandler):
    """grain's iterator handler, restoring across a change of data.worker_count
    or of the number of processes (`_common_position`).

    grain's state is shaped by the worker count (a plain next-index without
    workers, one per worker stream with them) and its set_state fails on the
    other shape (KeyError: 'exhausted'). Both encode one number, the batches
    this process has taken, so a state of another shape is rewritten into the
    target iterator's shape at the same position. Saving is grain's (same file
    names and JSON), so grain's own handler can still read these checkpoints.
    """

    def restore(self, directory, item=None, args=None):
        item = item or args.item
        if not isinstance(item, grain.DatasetIterator):
            return super().restore(directory, item=item)
        process, count = jax.process_index(), jax.process_count()
        directory = epath.Path(directory)
        path = directory / f"process_{process}-of-{count}.json"
        like = item.get_state()  # a fresh iterator's state: the shape its set_state accepts
        if path.exists():
            saved = json.loads(path.read_text())
        else:
            saved = input_pipeline.iterator_state_at(_common_position(directory, count), like)
        try:
            old = input_pipeline.iterator_worker_count(saved)
            new = input_pipeline.iterator_worker_count(like)
        except ValueError:
            old = new = None  # a shape this code does not know: grain's own set_state decides
        if old != new:
            try:
                position = input_pipeline.iterator_position(saved)
            except ValueError as e:
                raise ConfigError(
                    f"{path} was written with data.worker_count={old}, this run has "
                    f"data.worker_count={new}, and its state cannot be carried over ({e}); "
                    f"resume with --config.data.worker_count={old}"
                ) from e
            logging.warning(
                "data.worker_count changed from %d to %d: the input pipeline resumes at "
                "batch %d of this process's stream (from %s)",
                old,
                new,
                position,
                path,
            )
            saved = input_pipeline.iterator_state_at(position, like)
        item.set_state(saved)
        item.start_prefetch()  # as grain's handler: overlap the first batches with the rest
        return item


_PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


def _common_position(directory: epath.Path, count: int) -> int:
    """The batch every process of a run with another process count had reached.

    A process's batch n is its slice of global batch n whatever the count
    (input_pipeline.make_train_iterator slices each global batch, flips drawn
    before the slice), so that position carries over to any count that divides
    batch_size: a pod or cluster job resubmitted on fewer or more hosts resumes
    the same stream. Refused when the files are incomplete or disagree.
    """
    files = {}
    for p in directory.glob("process_*-of-*.json"):
        m = _PROCESS_FILE.fullmatch(p.name)
        if m:
            files.setdefault(int(m[2]), {})[int(m[1])] = p
    found = sorted(p.name for of in files.values() for p in of.values())
    complete = [of for of, got in files.items() if set(got) == set(range(of))]
    if len(complete) != 1 or len(files) != 1:
        raise ProcessCountMismatch(
            f"{directory} holds {found or 'no iterator states'}, not the states of all "
            f"processes of one run, and none for this run's {count}; the checkpoint is "
            "incomplete: resume from another step (--checkpoint or delete this one)"
        )
    (old,) = complete
    positions = {}
    for i, p in sorted(files[old].items()):
        try:
            positions[i] = input_pipeline.iterator_position(json.loads(p.read_text()))
        except ValueError as e:
            raise ProcessCountMismatch(
                f"{p}: written by a run of {old} processes, this run has {count}, and its "
                f"state cannot be carried over ({e}); resume with {old} processes"
            ) from e
    if len(set(positions.values())) != 1:
        raise ProcessCountMismatch(
            f"{directory}: the {old} processes that wrote it were at different batches "
            f"{positions}; resume with {old} processes"
        )
    position = positions[0]
    logging.warning(
        "the checkpoint in %s was written by %d processes, this run has %d: every "
        "process resumes at global batch %d of the same stream",
        directory.parent,
        old,
        count,
        position,
    )
    return position


class IteratorPosition:
    """A copy of an iterator's state, saved as that iterator would be (same JSON).

    For a save after the input failed: the live iterator may have moved past
    the last batch the model consumed, or be broken.
    """

    def __init__(self, state):
        self.state = state

    def get_state(self) -> bytes:  # grain's handler writes any non-DatasetIterator's bytes
        return json.dumps(self.state, indent=4).encode()


@ocp.args.register_with_handler(DataIterHandler, for_save=True)
@dataclasses.dataclass
class _DataIterSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(DataIterHandler, for_restore=True)
@dataclasses.dataclass
class _DataIterRestore(ocp.args.CheckpointArgs):
    item: Any


def checkpoint_dir(workdir) -> epath.Path:
    """WORKDIR/checkpoints, absolute (orbax refuses relative paths); gs:// kept as is."""
    workdir = os.fspath(workdir)
    if "://" not in workdir:
        workdir = os.path.abspath(workdir)
    return epath.Path(workdir) / "checkpoints"


def has_checkpoints(workdir) -> bool:
    """Whether WORKDIR holds a finished checkpoint (read before any manager exists)."""
    directory = checkpoint_dir(workdir)
    return directory.exists() and bool(ocp.utils.checkpoint_steps(directory))


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
            "data_iter": DataIterHandler(),
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
            data_iter=_DataIterSave(data_iter),
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


class CheckpointDamaged(ValueError):
    """A checkpoint's files cannot be read; the message names the step and what to do."""


# Errors of a restore that say what is wrong themselves (not damage).
_NOT_DAMAGE = (ConfigError, ProcessCountMismatch)


def _damaged(manager: ocp.CheckpointManager, step: int, error: Exception, fix: str):
    """CheckpointDamaged for `step`, from orbax/tensorstore's error (whose outer
    message can be a page of TensorStore spec: the innermost cause says what).

    "Cannot be read", not "is damaged": any failure of a restore lands here (out
    of device memory, a filesystem hiccup too), and deleting a sound checkpoint
    on our word would lose it. The cause is named so the user can tell."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    reason = " ".join(str(error).split())[:300]
    folder = epath.Path(manager.directory) / str(step)
    others = [s for s in manager.all_steps() if s != step]
    return CheckpointDamaged(
        f"checkpoint step {step} ({folder}) cannot be read: {type(error).__name__}: {reason}. "
        f"Other checkpoints: {others or 'none'}. If its files are damaged (a save or copy "
        f"cut short): {fix}"
    )


def _other_layout(manager: ocp.CheckpointManager, step: int, abstract_state) -> str | None:
    """Why `step` holds another state than `abstract_state` (its files sound), or None.

    The resume check compares configs; this catches what it cannot, e.g. a
    checkpoint written by code whose optimizer state was laid out otherwise
    (before schedules.make_optimizer kept one layout, clipping or weight decay
    added slots). Without it the restore's tree mismatch read as damage, and
    its advice, to delete the step, would have deleted every checkpoint in turn.
    """
    try:
        saved = _param_shapes(manager.item_metadata(step)["state"])
    except Exception:  # noqa: BLE001 -- unreadable metadata: damage, as before
        return None
    wanted = _param_shapes(nnx.to_pure_dict(abstract_state))
    if saved.keys() == wanted.keys():
        return None
    parts = _only_in(saved, wanted, "only in the checkpoint", "only in this run's state")
    return (
        f"checkpoint step {step} ({epath.Path(manager.directory) / str(step)}) holds another "
        f"state layout than this run builds: {'; '.join(parts)}. Its files are readable, "
        "not damaged: it was written by another model or optimizer setting, or by an "
        "ldattn_jax whose optimizer state was laid out otherwise. Resume with the code and "
        "config that wrote it, or start a new --workdir."
    )


def restore_train_state(
    manager: ocp.CheckpointManager, step: int, abstract_state, shardings, data_iter
):
    """(state placed with `shardings`, data_iter positioned after `step` batches)."""
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract_pure(abstract_state, shardings)),
                data_iter=_DataIterRestore(data_iter),
            ),
        )
    except _NOT_DAMAGE:
        raise
    except Exception as e:
        other = _other_layout(manager, step, abstract_state)
        if other:
            raise ConfigError(other) from e
        earlier = [s for s in manager.all_steps() if s < step]
        then = f"from step {max(earlier)}" if earlier else "from step 0"
        raise _damaged(manager, step, e, f"delete that folder and rerun to resume {then}.") from e
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


class CheckpointMismatchError(ValueError):
    """The checkpoint holds another network than the config builds."""


def _param_shapes(tree) -> dict[str, tuple]:
    """{'backbone/conv1/kernel': shape}: a restore target's or a checkpoint's leaves."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(getattr(leaf, "shape", ()))
        for path, leaf in leaves
    }


def _some(keys: list[str], what: str) -> str:
    return f"{len(keys)} {what} (e.g. {', '.join(keys[:2])})"


def _only_in(saved: dict, wanted: dict, saved_only: str, wanted_only: str) -> list[str]:
    """'N <saved_only> (e.g. a, b)' and the like for the keys one side lacks."""
    return [
        _some(keys, what)
        for keys, what in (
            (sorted(saved.keys() - wanted.keys()), saved_only),
            (sorted(wanted.keys() - saved.keys()), wanted_only),
        )
        if keys
    ]


def check_same_model(saved: dict[str, tuple], wanted: dict[str, tuple], where: str, name: str):
    """Refuses a restore of ``wanted`` from ``saved`` unless both hold the same
    parameters at the same shapes. A partial restore reads any subset silently:
    an xception config would restore an lda_st checkpoint's backbone and score
    as a model that was never trained."""
    shape = [f"{k} {saved[k]} vs {wanted[k]}" for k in sorted(wanted.keys() & saved.keys())
             if saved[k] != wanted[k]]  # fmt: skip
    parts = _only_in(
        saved, wanted, "parameters only in the checkpoint", f"only in model.name={name}"
    )
    if shape:
        parts.append(_some(shape, "of other shapes, checkpoint vs config"))
    if not parts:
        return
    raise CheckpointMismatchError(
        f"{where} holds another network than this config's model ({'; '.join(parts)}): "
        "use the run's own config (WORKDIR/config.json, no --config.model.* overrides)"
    )


def state_files_sha256(workdir, step: int) -> str | None:
    """sha256 of the files of checkpoint ``step``'s state (model + optimizer;
    `provenance.tree_sha256`): which weights scored, where a step number alone
    would also name a checkpoint of a later run retrained in the same workdir.
    None for a gs:// workdir (not read file by file here)."""
    from ldattn_jax.provenance import tree_sha256

    if "://" in os.fspath(workdir):
        return None
    return tree_sha256(os.path.join(os.fspath(checkpoint_dir(workdir)), str(int(step)), "state"))


_PICK_ANOTHER = (
    "pass --checkpoint N with one of the other steps, or delete that folder so that "
    "'best' / 'latest' choose among the others."
)


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
        try:
            saved = manager.item_metadata(step)["state"]
            saved = getattr(saved, "tree", saved)
            check_same_model(
                _param_shapes(saved["0"] if "0" in saved else saved[0]),
                _param_shapes(target),
                f"checkpoint step {step} of {workdir}",
                config.model.name,
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
        except CheckpointMismatchError:
            raise
        except Exception as e:
            raise _damaged(manager, step, e, _PICK_ANOTHER) from e
    finally:
        manager.close()
    pure = restored["state"]
    pure = pure[0] if 0 in pure else pure["0"]
    nnx.replace_by_pure_dict(abstract_state, pure)
    model = nnx.merge(graphdef, abstract_state)
    model.eval()
    return model, int(step)
