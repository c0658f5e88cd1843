"""Training: `python -m ldattn_jax.train --config configs/ffpp.py --workdir DIR [--config.k=v ...]`.

The same code runs on one CPU, one GPU or every host of a TPU pod: the mesh
comes from the config, each process feeds its slice of the global batch, and
one jitted step (explicit shardings, donated state) updates the replicated or
FSDP-sharded state. BatchNorm statistics are over the global batch because
the batch is one sharded array inside jit.

Sections of `train_and_evaluate`: logging → distributed/mesh → data → model +
optimizer → shardings → step functions → restore → loop (log, validate,
checkpoint, preemption).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import logging
import math
import os
import signal
import socket
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from data_prep import cli
from data_prep.record_view import RecordFormatError
from ldattn_jax import (
    checkpointing,
    data_stream,
    input_pipeline,
    provenance,
    schedules,
    sharding,
)
from ldattn_jax.checkpointing import CheckpointDamaged
from ldattn_jax.config_utils import (
    ConfigError,
    check_optimizer,
    check_resume_config,
    check_step_counts,
    check_storage,
    load_config,
    write_config,
)
from ldattn_jax.logging_utils import MetricWriter, progress_line

__all__ = [
    "InputFailed",
    "TrainResult",
    "TrainingDiverged",
    "main",
    "maybe_initialize_distributed",
    "restore_for_inference",
    "train_and_evaluate",
]

# docs/interfaces.md lists restore_for_inference under ldattn_jax.train too.
restore_for_inference = checkpointing.restore_for_inference

log = logging.getLogger("ldattn_jax.train")


@dataclasses.dataclass
class TrainResult:
    """What a run ended with (tests and the demo read it)."""

    step: int
    total_steps: int
    steps_per_epoch: int
    last_metrics: dict
    best_val_auc: float | None
    preempted: bool
    state: object = None  # the final nnx state (model, optimizer), on the mesh


class TrainingDiverged(FloatingPointError):
    """Loss or gradient became NaN/Inf; the message names the step."""


class _NonFiniteScores(FloatingPointError):
    """Validation scored NaN/inf (train turns it into TrainingDiverged at its step)."""


class InputFailed(RuntimeError):
    """A damaged record or shard stopped the run; the message names it and the step saved."""


def maybe_initialize_distributed() -> None:
    """jax.distributed.initialize() on TPU VMs / SLURM / wherever a coordinator is set.

    Explicit settings win: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES +
    JAX_PROCESS_ID (what launch/gpu_slurm.sbatch and the two-process test set).
    """
    if jax.distributed.is_initialized():
        return
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address and "JAX_NUM_PROCESSES" in os.environ:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        return
    on_tpu_vm = os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")
    multi_slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    multi_mpi = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    if on_tpu_vm or multi_slurm or multi_mpi:
        # jax's cluster auto-detection (TPU metadata server, SLURM, Open MPI).
        jax.distributed.initialize()


# --------------------------------------------------------------------------- checks


def init_notes(config) -> list[str]:
    """What a fresh run at the paper's geometry starts from that the paper does not."""
    m = config.model
    paper_vit = int(m.embed_dim) == 768 and int(m.patch_size) == 16
    if m.name != "xception" and paper_vit and not m.get("vit_init"):
        return [
            "config.model.vit_init is empty: the attention modules start from random "
            "weights, while the paper starts them from a pretrained ViT-B/16 (nothing is "
            "downloaded at run time: see ldattn_jax/models/README.md, 'Optional "
            "initialisations')"
        ]
    return []


# Model sizes (key, minimum) the model code divides by or shapes arrays with: out of
# range they fail there as ZeroDivisionError or a shape error that names no key.
_MODEL_SIZES = (
    *((k, 1) for k in ("image_size", "attention_size", "patch_size", "embed_dim")),
    *((k, 1) for k in ("num_templates", "num_maps")),
    ("middle_blocks", 0),
)


def _abstract_model(config):
    """The model, abstract (shapes only); a ConfigError names a model key it refuses."""
    from ldattn_jax.models.lda import build_model

    m = config.model
    for key, low in _MODEL_SIZES:
        value = m.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"config.model.{key}={value!r}: must be an integer >= {low}")
    if m.get("num_classes") != 2:  # the loss and the scores read classes 0 (real) and 1 (fake)
        raise ConfigError(f"config.model.num_classes={m.get('num_classes')!r}: must be 2")
    try:
        return nnx.eval_shape(lambda: build_model(m, rngs=nnx.Rngs(config.seed)))
    except (ValueError, ZeroDivisionError) as e:  # the model code's own checks
        text = str(e) if str(e).startswith("config.model.") else f"config.model: {e}"
        raise ConfigError(text) from None


def _check_splits(config) -> None:
    """Refuses validation splits that would choose checkpoints on the wrong data."""
    train, val = config.data.train_split, config.data.val_split
    off = "or --config.data.val_split='' to train without validation (no best checkpoint)"
    if val == "test":
        raise ConfigError(
            "config.data.val_split='test': checkpoints would be chosen on the test split, "
            f"which inflates the test results; pass a validation split ('val'), {off}"
        )
    if val and val == train:
        raise ConfigError(
            f"config.data.val_split={val!r} is also config.data.train_split: the best "
            f"checkpoint would be chosen on the data it trained on; pass another split, {off}"
        )


def _check_before_compiling(config, mesh, info) -> None:
    """Errors a user can fix, raised before anything is compiled."""
    from ldattn_jax.models.lda import required_frames

    n_batch_dev = math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
    if config.batch_size % n_batch_dev:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by the {n_batch_dev} "
            f"devices of the mesh {dict(mesh.shape)}; use a multiple of {n_batch_dev}"
        )
    if config.batch_size % jax.process_count():
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by the "
            f"{jax.process_count()} processes"
        )
    if info is not None:
        need = required_frames(config.model)
        if info["stack"] + 1 < need:
            raise ConfigError(
                f"config.model.name={config.model.name!r} needs {need} frames per sample "
                f"(stack n={config.model.stack}), but the shards in {config.data.dir} hold "
                f"stacks of {info['stack'] + 1} (built with --stack {info['stack']}); "
                f"rebuild with --stack {need - 1} or lower --config.model.stack"
            )
        if info["stack"] + 1 > need:
            # ArrayRecord reads a record whole, so the frames this model skips
            # are still read from disk and paged in: on FF++ at 398 px a spatial
            # model reads ~4x the bytes it uses, which the page cache and a
            # loader at GPU pace feel (docs/training.md, item 4).
            log.warning(
                "config.model.name=%r uses %d of the %d frames of each record in %s; "
                "records are read whole, so this run reads %.3gx the image bytes it "
                "uses. Shards built with --stack %d hold only what it uses",
                config.model.name,
                need,
                info["stack"] + 1,
                config.data.dir,
                (info["stack"] + 1) / need,
                need - 1,
            )
    if config.data.balance not in input_pipeline.BALANCE_MODES:
        raise ConfigError(
            f"config.data.balance={config.data.balance!r}; choose one of "
            f"{input_pipeline.BALANCE_MODES}"
        )


def _open_data(config):
    """(train source, val source or None, shard info or None)."""
    from data_prep import shards

    data_dir = config.data.dir
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"config.data.dir={data_dir!r} does not exist; build shards with "
            "`python -m data_prep.build --out DIR ...` and pass --config.data.dir=DIR"
        )
    try:
        info = shards.read_info(data_dir)
    except ValueError as e:  # several builds under data_dir: the message lists them
        raise ConfigError(f"config.data.dir: {e}") from None
    fields = input_pipeline.RECORD_FIELDS  # decode nothing the step does not use

    def open_split(key, instead):
        try:
            return shards.open_split(data_dir, config.data[key], fields)
        except KeyError as e:  # the message lists the build's splits
            raise ConfigError(
                f"config.data.{key}={config.data[key]!r}: {e.args[0]}; {instead}"
            ) from None

    train = open_split("train_split", "pass one of those")
    val = None
    if config.data.val_split and config.eval_every != 0:
        # A missing val split is a mistake, not "no validation": the run would
        # have no best checkpoint. '' says "off" explicitly.
        val = open_split(
            "val_split",
            "pass one of those, or --config.data.val_split='' to train without validation "
            "(no best checkpoint)",
        )
    return train, val, info


def _train_labels(config, train_source, info) -> tuple[np.ndarray | None, object]:
    """(per-record labels if needed, ClassCounts) — both classes are always logged."""
    split = (info or {}).get("splits", {}).get(config.data.train_split, {})
    by_label = split.get("by_label", {})
    labels = None
    if config.data.balance == "sample" or not by_label:
        labels = input_pipeline.record_labels(train_source)
        counts = input_pipeline.class_counts(labels)
    else:
        counts = input_pipeline.ClassCounts(
            real=int(by_label.get("real", {}).get("records", 0)),
            fake=int(by_label.get("fake", {}).get("records", 0)),
        )
    return labels, counts


# --------------------------------------------------------------------------- steps


def _cross_entropy(logits, labels, class_w):
    """Class-weighted mean cross-entropy (weights 1 unless balance='loss_weight')."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    w = class_w[labels]
    return jnp.sum(w * ce) / jnp.sum(w)


def make_train_step(graphdef, schedule):
    def train_step(state, batch, class_w):
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(model):
            logits, _ = model(batch["frames"])
            return _cross_entropy(logits, batch["label"], class_w), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        lr = schedule(optimizer.step[...])  # the lr this update uses
        optimizer.update(model, grads)
        params = nnx.state(model, nnx.Param)
        metrics = {
            "loss": loss,
            "acc": jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)),
            "lr": lr,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
        }
        return nnx.state((model, optimizer)), metrics

    return train_step


def make_eval_step(eval_graphdef):
    def eval_step(model_state, frames):
        """The logit margin (fake - real), as evaluate.Predictor scores: an fp32
        softmax saturates a confident model's P(fake) at exactly 1.0 (margin > ~17),
        tying frames, and the best checkpoint was chosen on an AUC pulled towards
        0.5 that evaluate's (the sigmoid in fp64 on the host) did not show."""
        model = nnx.merge(eval_graphdef, model_state)
        logits, _ = model(frames)
        logits = logits.astype(jnp.float32)
        return logits[:, 1] - logits[:, 0]

    return eval_step


# --------------------------------------------------------------------------- helpers


class _Preemption:
    """SIGTERM/SIGINT/SIGHUP → save and exit at the next step boundary (all processes agree).

    SIGHUP is what a run gets when the terminal session it was started from ends
    (a dropped ssh connection), and what launch/tpu_pod.sh's stop command sends: by
    default it kills the process on the spot, losing every step since the last
    periodic checkpoint.
    """

    # grain's worker processes ignore these (input_pipeline.ignore_stop_signals).
    SIGNALS = input_pipeline.STOP_SIGNALS

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            # signal.signal fails outside the main thread (e.g. a test runner thread).
            with contextlib.suppress(ValueError):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        del frame
        log.warning("received signal %d: saving a checkpoint and stopping", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def should_stop(self, step: int, sync: bool) -> bool:
        """True when every process should save and exit after `step`."""
        if jax.process_count() == 1:
            return self.requested
        # The JAX preemption service (TPU maintenance events) names one step for all.
        with contextlib.suppress(RuntimeError):  # service disabled: signals only
            if multihost_utils.reached_preemption_sync_point(step):
                return True
        # A local signal counts at the next sync point (log/save), where all processes
        # exchange their flags, so that they stop at the same step.
        return sync and bool(multihost_utils.process_allgather(np.int32(self.requested)).any())


@contextlib.contextmanager
def _workdir_lock(workdir: str):
    """Holds WORKDIR/.train.lock.process_<index> (flock) while this process trains.

    Two trainings in one workdir would mix their checkpoints and collide on
    orbax's temporary folders. One lock per process index: a multi-host run
    needs no coordination, and two jobs collide on every index. The OS drops a
    flock when its process dies, so a killed run leaves no stale lock. gs://
    has no locks: not checked there.
    """
    if "://" in str(workdir):
        yield
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(
            f"--workdir {workdir} is a file; pass a folder (it holds the run's checkpoints/, "
            "metrics.jsonl and config.json)"
        )
    path = os.path.join(workdir, f".train.lock.process_{jax.process_index()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: keep the holder's pid
    except OSError as e:
        raise ConfigError(
            f"--workdir {workdir}: cannot write there ({e.strerror or e}); pass a folder you "
            "can write to"
        ) from None
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that has not written its pid yet"
            raise ConfigError(
                f"--workdir {workdir} is in use by another training ({holder}; {path}): wait "
                "for it to end or stop it, or pass another --workdir"
            ) from None
        except OSError as e:  # a filesystem without flock (some network mounts)
            log.warning("cannot lock %s (%s): a second run here would not be stopped", path, e)
        f.truncate(0)
        f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        f.flush()
        yield


def _record_error(error: BaseException | None) -> RecordFormatError | None:
    """The damaged record or shard (data_prep) behind `error`, if any."""
    while error is not None and not isinstance(error, RecordFormatError):
        error = error.__cause__ or error.__context__
    return error


def _place(state, shardings):
    """Host arrays (identical on every process) → global arrays with `shardings`."""
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]),
        state,
        shardings,
    )


def _validate(eval_step, model_state, val_source, config, mesh, num_frames) -> dict:
    from ldattn_jax.evaluate import sigmoid
    from ldattn_jax.metrics import binary_metrics

    it, n_batches = input_pipeline.make_eval_batches(
        val_source,
        config,
        num_frames=num_frames,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        max_batches=config.eval_max_batches,
    )
    scores, labels, valid = [], [], []
    for batch in it:
        # Label and padding mask travel with the frames (one shard_batch) and come
        # back in the scores' gather, so row i of all three is one record. The
        # global row order follows the mesh's devices, not process order: a host's
        # devices need not be one block of the batch axes (jax.make_mesh interleaves
        # the hosts of a TPU pod), so gathering host-side labels would mispair them.
        g = sharding.shard_batch(
            mesh, {"frames": batch["frames"], "label": batch["label"], "valid": batch["valid"]}
        )
        p = eval_step(model_state, g["frames"])
        p, label, ok = multihost_utils.process_allgather((p, g["label"], g["valid"]), tiled=True)
        scores.append(np.asarray(p))
        labels.append(np.asarray(label))
        valid.append(np.asarray(ok))
    del n_batches
    labels = np.concatenate(labels)
    valid = np.concatenate(valid).astype(bool)
    logits = np.concatenate(scores).astype(np.float64)
    broken = valid & ~np.isfinite(logits)
    if broken.any():
        # The training loss can stay finite while the inference-mode network (the
        # BatchNorm running statistics) overflows: the state is as unusable.
        raise _NonFiniteScores(
            f"validation gave non-finite scores for {int(broken.sum())} of "
            f"{int(valid.sum())} frames"
        )
    scores = sigmoid(logits)  # P(fake), as evaluate's
    m = binary_metrics(labels[valid], scores[valid], with_ci=False)
    return {"val_auc": m["auc"], "val_acc": m["acc"], "val_n": int(valid.sum())}


# --------------------------------------------------------------------------- main


def train_and_evaluate(config, workdir: str) -> TrainResult:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if any."""
    # Mistakes in the config alone stop the run before anything is written.
    check_step_counts(config)  # e.g. log_every=0 would divide by zero after step 1
    check_optimizer(config)
    _check_splits(config)
    abstract_model = _abstract_model(config)
    with _workdir_lock(workdir):
        return _train_and_evaluate(config, workdir, abstract_model)


def _train_and_evaluate(config, workdir: str, abstract_model) -> TrainResult:
    # ---- logging
    workdir_path = epath.Path(workdir)
    is_main = jax.process_index() == 0
    # Every process checks before anyone overwrites config.json, so a model
    # mismatch stops all of them (not just process 0, leaving the rest hanging).
    # Only a workdir with checkpoints has something to resume: a first run that
    # died before its first save (out of memory at step 1) left a config.json,
    # and its rerun may change anything (a smaller batch, bfloat16).
    changed = []
    if checkpointing.has_checkpoints(workdir):
        data_stream.adopt_recorded_version(config, workdir_path)
        changed = check_resume_config(config, workdir_path / "config.json")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("ldattn_jax: config checked")
    if is_main and changed:
        log.warning("config differs from the workdir's previous run: %s", "; ".join(changed))
    log.info(
        "process %d/%d, %d local / %d global devices (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
    )

    # ---- mesh
    mesh = sharding.make_mesh(config)
    log.info("mesh %s", dict(mesh.shape))

    # ---- data
    train_source, val_source, info = _open_data(config)
    _check_before_compiling(config, mesh, info)
    from ldattn_jax.models.lda import build_model, required_frames

    num_frames = required_frames(config.model)
    labels, counts = _train_labels(config, train_source, info)
    indices = (
        input_pipeline.epoch_indices(labels, "sample")
        if config.data.balance == "sample"
        else np.arange(len(train_source))
    )
    steps_per_epoch = len(indices) // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"the {config.data.train_split!r} split has {len(indices)} samples per epoch, "
            f"fewer than config.batch_size={config.batch_size}"
        )
    total_steps = (
        config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch
    )
    class_w = np.ones(2, np.float32)
    if config.data.balance == "loss_weight":
        class_w = input_pipeline.class_weights(counts)
    log.info(
        "train split %r: %d real + %d fake records; balance=%s (loss weights %s, "
        "%d samples/epoch); %d steps/epoch, %d steps",
        config.data.train_split,
        counts.real,
        counts.fake,
        config.data.balance,
        class_w.tolist(),
        len(indices),
        steps_per_epoch,
        total_steps,
    )
    stream = data_stream.describe(config, len(train_source), counts, len(indices))
    train_iter = input_pipeline.make_train_iterator(
        train_source,
        config,
        num_frames=num_frames,
        indices=indices,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    # ---- model + optimizer (abstract first: shardings and restore need no init)
    tx = schedules.make_optimizer(config, steps_per_epoch)
    schedule = schedules.make_schedule(config, steps_per_epoch)

    def create():
        model = build_model(config.model, rngs=nnx.Rngs(config.seed))
        model.train()
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    graphdef, abstract_state = nnx.split(nnx.eval_shape(create))
    abstract_model.eval()
    eval_graphdef, _ = nnx.split(abstract_model)

    # ---- shardings
    state_sh = sharding.param_shardings(mesh, abstract_state, config.fsdp_min_size)
    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)
    train_step = jax.jit(
        make_train_step(graphdef, schedule),
        in_shardings=(state_sh, batch_sh, repl),
        out_shardings=(state_sh, repl),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(
        make_eval_step(eval_graphdef),
        in_shardings=(state_sh[0], batch_sh),
        out_shardings=batch_sh,
    )

    # ---- restore or init
    manager = checkpointing.make_manager(
        workdir, keep=config.keep_checkpoints, async_save=config.async_checkpointing
    )
    start = manager.latest_step()
    if start is not None:
        data_stream.check_resume(workdir_path, stream)
        state, train_iter = checkpointing.restore_train_state(
            manager, start, abstract_state, state_sh, train_iter
        )
        log.info("resumed from %s at step %d", checkpointing.checkpoint_dir(workdir), start)
    else:
        start = 0
        _, host_state = nnx.split(create())
        state = _place(jax.device_get(host_state), state_sh)
        log.info("initialised %s from seed %d", config.model.name, config.seed)
        for note in init_notes(config):
            log.warning(note)
    if is_main:
        # Only now: a config that fails before or during the restore must leave the
        # workdir's config.json describing the checkpoints that are there.
        workdir_path.mkdir(parents=True, exist_ok=True)
        data_stream.write(workdir_path, stream)
        write_config(config, workdir_path / "config.json")
        if start < total_steps:  # a finished run asked again trains nothing: no session
            provenance.record_training_session(workdir_path, start, config.data.dir)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract_model, nnx.Param)))
    log.info("%s: %.2f M parameters", config.model.name, n_params / 1e6)

    # ---- loop
    writer = MetricWriter(workdir, enabled=is_main, resume_step=start)
    eval_every = steps_per_epoch if config.eval_every < 0 else config.eval_every
    best_auc = _best_saved_auc(manager) if start else None  # of the whole run, not this part
    last = {}
    preempted = False
    class_w_dev = jax.device_put(class_w, repl)
    pending = None  # (step, device metrics) of the previous step, checked one step late
    t_log, step_log = time.time(), start

    def diverged(what: str, step: int) -> TrainingDiverged:
        latest = manager.latest_step()
        manager.wait_until_finished()
        where = (
            f"the last good checkpoint is step {latest} in {checkpointing.checkpoint_dir(workdir)}"
            if latest is not None
            else "no checkpoint was saved yet, so a rerun starts from step 0"
        )
        return TrainingDiverged(
            f"{what} at step {step}: training diverged; {where}. Lower --config.lr or set "
            "--config.grad_clip_norm (either may change when the run resumes)."
        )

    def check(step, metrics):
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
            raise diverged(f"loss={m['loss']} grad_norm={m['grad_norm']}", step)
        return m

    # The data position of the last batch a step consumed: what a save after a
    # failed read must record (the live iterator may be past it, or broken).
    iter_state = copy.deepcopy(train_iter.get_state())

    def input_failed(error, reading):
        """Saves the last good state when reading data fails, so no step since the
        last checkpoint is lost, then raises InputFailed for a damaged record/shard
        (any other error is the caller's to re-raise)."""
        nonlocal pending, last
        if pending is not None:  # a diverged step raises TrainingDiverged: not saved
            last = check(*pending)
            pending = None
        latest = manager.latest_step()
        if step in (0, latest):
            done = f"No step was trained since {f'checkpoint step {step}' if step else 'step 0'}"
        elif jax.process_count() > 1:
            # Saving is collective; the other processes are not reading this record.
            since = f"checkpoint step {latest}" if latest else "step 0"
            done = f"One process cannot save alone: the run resumes from {since}"
        else:
            # `state` is the last step's output, never donated to a step (the read
            # failed before the next one) and checked finite above.
            position = checkpointing.IteratorPosition(iter_state)
            checkpointing.save_train_state(manager, step, state, position)
            done = f"Saved step {step} in {checkpointing.checkpoint_dir(workdir)}"
        damaged = _record_error(error)
        if damaged is None:
            log.error("%s failed after step %d. %s.", reading, step, done)
            return
        raise InputFailed(
            f"{reading} failed after step {step}: {cli.one_line(damaged)}. {done}. "
            f"Check the build with `python -m data_prep.verify {config.data.dir}`, rebuild "
            "the damaged shards (rerun data_prep.build with the same arguments), then rerun "
            "this command to resume."
        ) from error

    step, input_wait = start, 0.0
    # Speed and input wait are measured over the training steps of a log window
    # only: validation and the blocking part of a save at a step are cut out of
    # the window they fall in (or follow the log line of), so seconds_per_step,
    # images_per_s, ETA and input_wait_fraction describe training, not evaluation.
    try:
        with _Preemption() as preemption:
            while step < total_steps:
                t_input = time.time()
                try:
                    batch = next(train_iter)
                except Exception as e:
                    input_failed(e, "reading the training data")
                    raise
                iter_state = copy.deepcopy(train_iter.get_state())
                batch = sharding.shard_batch(mesh, batch)
                input_wait += time.time() - t_input
                state, metrics = train_step(state, batch, class_w_dev)
                if pending is not None:
                    check(*pending)
                step += 1
                pending = (step, metrics)
                if step == start + 1:
                    # The first step compiles; time the rest so img/s and ETA are honest.
                    last = check(*pending)
                    pending = None
                    took = time.time() - t_log
                    log.info("step %d (with compilation) took %.1f s", step, took)
                    t_log, step_log, input_wait = time.time(), step, 0.0

                do_log = step % config.log_every == 0 or step == total_steps
                do_eval = (
                    val_source is not None
                    and eval_every > 0
                    and (step % eval_every == 0 or step == total_steps)
                )
                do_save = step % config.checkpoint_every == 0 or step == total_steps or do_eval
                stop = preemption.should_stop(step, sync=do_log or do_save)
                if (do_log or do_save or stop) and pending is not None:
                    last = check(*pending)
                    pending = None
                if do_log:
                    now = time.time()
                    if step > step_log:
                        sec = max(now - t_log, 1e-9) / (step - step_log)
                        last["images_per_s"] = config.batch_size / sec
                        last["seconds_per_step"] = sec
                        # Share of the time spent waiting for the next batch (grain,
                        # then host -> device): ~0 while the accelerator is the
                        # bottleneck (steps dispatch asynchronously, the loader reads
                        # ahead); large when the loader stalls it.
                        last["input_wait_fraction"] = min(1.0, input_wait / max(now - t_log, 1e-9))
                    t_log, step_log, input_wait = now, step, 0.0
                    last["epoch"] = step / steps_per_epoch
                    writer.write(step, last)
                    if is_main:
                        log.info(progress_line(step, total_steps, steps_per_epoch, last))
                ckpt_metrics = None
                t_pause = time.time()
                if do_eval:
                    try:
                        val = _validate(eval_step, state[0], val_source, config, mesh, num_frames)
                    except _NonFiniteScores as e:
                        raise diverged(str(e), step) from None  # not saved: not a good state
                    except Exception as e:
                        input_failed(e, "validation")
                        raise
                    val["val_seconds"] = time.time() - t_pause
                    writer.write(step, val)
                    log.info(
                        "step %d: val AUC %s, ACC %s on %d frames (%.1f s)",
                        step,
                        _fmt(val["val_auc"]),
                        _fmt(val["val_acc"]),
                        val["val_n"],
                        val["val_seconds"],
                    )
                    last.update(val)
                    if val["val_auc"] is not None:
                        ckpt_metrics = {checkpointing.BEST_METRIC: val["val_auc"]}
                        best_auc = max(best_auc or -1.0, val["val_auc"])
                if do_save or stop:
                    checkpointing.save_train_state(manager, step, state, train_iter, ckpt_metrics)
                # Shift the window's start by the pause: no training step ran in it.
                t_log += time.time() - t_pause
                if stop and step < total_steps:
                    preempted = True
                    log.warning("stopped at step %d after saving; rerun to resume", step)
                    break
            if pending is not None:
                last = check(*pending)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        close = getattr(train_iter, "close", None)
        if close is not None:
            close()
    return TrainResult(
        step=step,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        last_metrics=last,
        best_val_auc=best_auc,
        preempted=preempted,
        state=state,
    )


def _best_saved_auc(manager) -> float | None:
    """The best validation AUC among the run's checkpoints (orbax keeps the best one)."""
    best = manager.best_step()
    if best is None:
        return None
    metrics = manager.metrics(best) or {}
    auc = metrics.get(checkpointing.BEST_METRIC)
    return None if auc is None else float(auc)


def _fmt(x):
    return "n/a" if x is None else f"{x:.4f}"


def main(argv=None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m ldattn_jax.train",
        description="Train an LDA deepfake detector (docs/training.md).",
        epilog="Any --config.KEY=VALUE overrides a config value (see docs/training.md).",
    )
    parser.add_argument("--config", required=True, help="a configs/*.py file")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics, config.json")
    args, overrides = parser.parse_known_args(argv)
    # force: imported libraries (absl via orbax/grain) may already own the root logger.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stdout,
        force=True,
    )
    # orbax/TFDS report every file they touch at INFO; keep the progress lines readable.
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        config = load_config(args.config, overrides)
        check_storage(args.workdir, config.data.dir)
    except ConfigError as e:
        parser.error(str(e))
    maybe_initialize_distributed()
    if jax.process_index() != 0:
        logging.getLogger().setLevel(logging.WARNING)  # process 0 tells the story
    try:
        result = train_and_evaluate(config, args.workdir)
    except (ConfigError, FileNotFoundError, TrainingDiverged, InputFailed, CheckpointDamaged) as e:
        log.error("%s", e)
        return 1
    except RecordFormatError as e:  # read before training (e.g. labels of an older build)
        log.error(
            "%s; check the build with `python -m data_prep.verify %s` and rebuild it",
            " ".join(str(e).split()),
            config.data.dir,
        )
        return 1
    finally:
        input_pipeline.release_worker_batches()
    log.info(
        "done at step %d/%d%s",
        result.step,
        result.total_steps,
        " (preempted)" if result.preempted else "",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
