"""Offline evaluation of a trained run on a split of built shards.

Run:
  python -m ldattn_jax.evaluate --workdir runs/ffpp [--config configs/ffpp.py] \
      [--checkpoint best|latest|STEP] [--split test|val|train|all|test+val] [--data DIR]

``--data`` points at another build (cross-dataset: trained on FF++, tested on
Celeb-DF). ``--split`` may pool splits (``test+val``; ``all`` = every split of
the build): for a held-out build no split was trained on, so all of it is test
data, and more test videos mean less noisy AUCs. Writes ``WORKDIR/eval/<dataset>_<split>_<step>/``:
metrics.json (schema in docs/evaluation.md), scores.csv (per frame),
video_scores.csv (per video), roc.png, calibration.png, attention/*.png and
failures/*.png (of the reals and of each method's fakes, the videos most
wrong at the threshold: paper V-E). The directory is replaced whole, never
rewritten in place (`_swap_in`): a killed run leaves the earlier result.

The model runs jitted on all local devices with the batch split over the
mesh of ``config.mesh``, exactly like training; the last batch is padded to
the full batch and the padding dropped from the results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import fcntl
import functools
import glob
import json
import math
import os
import re
import shutil
import sys
from collections import defaultdict

import cv2
import numpy as np

from data_prep import atomic_files, cli, leftovers
from ldattn_jax import eval_names, json_out, provenance, thresholds
from ldattn_jax import metrics as metrics_lib
from ldattn_jax.defect_capture import DefectCapture
from ldattn_jax.failure_cases import FailureCases, group_of

# Record fields evaluation needs (frames are sliced to what the model reads).
META_FIELDS = ("label", "dataset", "compression", "method", "video_id", "frame_index")
# What _EvalRecord reads; the shards' box and landmarks are never decoded.
EVAL_FIELDS = (*META_FIELDS, "frames", "mask", "has_mask")


# What --config / --config.* may not change in a run's config: the network its
# checkpoints hold (a model that is a subset of it restores without a word and
# scores as another model), the compute dtype (--dtype names its results apart)
# and the shards that count as the run's own (--data names other builds apart).
_RUN_KEYS = ("model.", "data.dir")


class OutputDirError(ValueError):
    """The folder results go to cannot be created or written; the message says which."""


def writable_dir(path: str, flag: str) -> None:
    """Creates ``path`` and checks a file can be made in it, or raises
    OutputDirError naming it: done before any scoring, so that a folder that
    cannot take the results fails in a second rather than after the work.

    A probe file, not os.access: root passes os.access on a read-only mount."""
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputDirError(
            f"{flag} {path}: cannot write there ({type(e).__name__}: {e.strerror or e}); "
            "pass a folder you can write to"
        ) from None


def load_run_config(workdir: str, config_path: str | None = None, overrides=()):
    """The run's config: ``WORKDIR/config.json`` or ``config_path``, + overrides.

    train.py writes the resolved config to the workdir, so a workdir alone is
    enough to rebuild the model exactly as it was trained. Where it has one,
    ``config_path`` and the overrides may change only what the run did not
    fix (batch size, mesh, loader threads): a ConfigError names the others.
    """
    from ldattn_jax.config_utils import ConfigError, apply_overrides, flat_values, load_config

    path = os.path.join(workdir, "config.json")
    run = _read_run_config(path) if os.path.isfile(path) else None
    if config_path:
        config = load_config(config_path, overrides)
    elif run is None:
        raise FileNotFoundError(
            f"{path} not found: pass --config CFG, or a --workdir written by ldattn_jax.train"
        )
    else:
        # On a copy: apply_overrides changes its argument, and `run` is the reference.
        config = apply_overrides(run.copy_and_resolve_references(), overrides)
    if run is not None:
        old, new = flat_values(run), flat_values(config)
        changed = sorted(
            k for k in old.keys() | new.keys()
            if k.startswith(_RUN_KEYS) and old.get(k) != new.get(k)
        )  # fmt: skip
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            raise ConfigError(
                f"--config/--config.* change what {path} was trained with ({diffs}); its "
                "checkpoints hold that model. Drop them: the workdir alone rebuilds the run "
                "(--data for other shards, --dtype for another compute dtype)"
            )
    return config


def _read_run_config(path: str):
    import ml_collections

    from ldattn_jax.config_utils import ConfigError

    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); it is the run's resolved config") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise ConfigError(
            f"{path}: not a config written by ldattn_jax.train (no 'model' section); pass "
            "the --workdir of a training run"
        )
    return ml_collections.ConfigDict(doc)


def with_compute_dtype(config, dtype: str | None):
    """The run's config computing in ``dtype`` (None: the dtype it was trained in).

    Only activations change: params and BatchNorm statistics are float32 in
    every checkpoint, so a float32-trained run restores as is. The scores move
    slightly (docs/evaluation.md gives the measured AUC change), which is why
    results of another dtype never overwrite the trained dtype's.
    """
    if dtype is None or dtype == config.model.dtype:
        return config
    # An unknown dtype is refused by the model's constructor, naming the choices.
    config = config.copy_and_resolve_references()
    config.model.dtype = dtype
    return config


def sigmoid(margin: np.ndarray) -> np.ndarray:
    """P(fake) = softmax(logits)[1] = sigmoid(l1 - l0), overflow-free in fp64."""
    e = np.exp(-np.abs(margin))
    return np.where(margin >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@functools.lru_cache(maxsize=16)
def _jitted_forward(graphdef, stencils: bool):
    """The jitted forward pass of one architecture, shared by its Predictors.

    A GraphDef is hashable and equal for every model of one config, so the
    val, test and held-out evaluations of one process (demo, ablation,
    sweeps) compile once instead of once per Predictor. Looked up once per
    Predictor: hashing a GraphDef costs ~2 ms (the paper model), too much
    for every batch as a static jit argument. `stencils`
    (`xception.use_stencils()`, read while tracing) is part of the key, so a
    Predictor made after LDATTN_STENCILS changed traces anew.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    @jax.jit
    def forward(state, frames):
        logits, maps = nnx.merge(graphdef, state)(frames)
        # The logit margin, not the fp32 softmax: a confident model saturates
        # fp32 P(fake) to exactly 1.0 (margin > ~17), which ties frames and
        # biases AUC towards 0.5. The sigmoid is taken on the host in fp64.
        logits = logits.astype(jnp.float32)
        return logits[:, 1] - logits[:, 0], maps

    return forward


class Predictor:
    """Jitted forward pass on the mesh: numpy frames in, P(fake) and maps out.

    Params are replicated; each call's batch is padded to ``batch_size`` (a
    multiple of the number of batch devices, so one compiled shape serves
    every batch) and the padding is dropped from the outputs.
    """

    def __init__(self, model, config, batch_size: int | None = None):
        import jax
        from flax import nnx

        from ldattn_jax import sharding
        from ldattn_jax.models.lda import required_frames
        from ldattn_jax.models.xception import use_stencils

        self.mesh = sharding.make_mesh(config)
        n_dev = math.prod(self.mesh.shape[a] for a in sharding.BATCH_AXES)
        bs = int(batch_size or config.batch_size)
        self.batch_size = max(n_dev, -(-bs // n_dev) * n_dev)
        self.num_frames = required_frames(config.model)
        model.eval()  # BatchNorm running averages, no dropout
        graphdef, state = nnx.split(model)
        self._state = jax.device_put(state, sharding.replicated(self.mesh))
        self._shard = lambda x: sharding.shard_batch(self.mesh, x)
        self._forward = _jitted_forward(graphdef, use_stencils())

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, dict]:
        """frames [b, >=required, S, S, 3] uint8 with b <= batch_size."""
        import jax

        b = frames.shape[0]
        if b > self.batch_size:
            raise ValueError(f"Predictor: batch of {b} > batch_size {self.batch_size}")
        frames = np.asarray(frames)[:, : self.num_frames]
        if b < self.batch_size:  # pad by repeating the last row; dropped below
            pad = np.repeat(frames[-1:], self.batch_size - b, axis=0)
            frames = np.concatenate([frames, pad])
        margin, maps = self._forward(self._state, self._shard(frames))
        margin, maps = jax.device_get((margin, maps))
        margin = np.asarray(margin, np.float64)[:b]
        return sigmoid(margin), {k: np.asarray(v)[:b] for k, v in maps.items()}


def fit_frames(frames: np.ndarray, num_frames: int, image_size: int) -> np.ndarray:
    """Keep the frames the model reads; resize if the shards were built at another size.

    Same rule as training's input pipeline (INTER_AREA when shrinking), so
    evaluation sees what training saw.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < num_frames or frames.shape[-1] != 3:
        raise ValueError(
            f"'frames' has shape {frames.shape}; expected [>= {num_frames}, S, S, 3] uint8 "
            "(rebuild the shards with a stack >= config.model.stack)"
        )
    frames = frames[:num_frames]
    if frames.shape[1:3] != (image_size, image_size):
        interp = cv2.INTER_AREA if frames.shape[1] > image_size else cv2.INTER_CUBIC
        frames = np.stack(
            [cv2.resize(f, (image_size, image_size), interpolation=interp) for f in frames]
        )
    return np.ascontiguousarray(frames, np.uint8)


class _EvalRecord:
    """Record → the fields evaluation needs (decoded once, in grain's read threads)."""

    def __init__(self, num_frames: int, image_size: int):
        self.num_frames, self.image_size = num_frames, image_size

    def __call__(self, rec: dict) -> dict:
        out = {k: rec[k] for k in META_FIELDS}
        out["frames"] = fit_frames(rec["frames"], self.num_frames, self.image_size)
        out["mask"] = np.asarray(rec["mask"], np.uint8)
        out["has_mask"] = bool(rec["has_mask"])
        return out


def iterate_batches(source, config, batch_size: int):
    """Ordered, unshuffled batches of every record (grain; the last batch is partial).

    `source` is one random-access source or a list of them (read one after another).
    Read by config.data.read_threads threads in each of config.data.worker_count
    processes (0 = this one), as in training.
    """
    import grain

    from ldattn_jax import input_pipeline
    from ldattn_jax.models.lda import required_frames

    sources = source if isinstance(source, list | tuple) else [source]
    ds = grain.MapDataset.concatenate([grain.MapDataset.source(s) for s in sources])
    ds = ds.map(_EvalRecord(required_frames(config.model), int(config.model.image_size)))
    ds = ds.batch(batch_size, drop_remainder=False, batch_fn=input_pipeline.StackBatch())
    threads = int(config.data.get("read_threads", 4))
    # The buffer counts batches: as small as the threads allow (stacks are large).
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2, threads))
    return input_pipeline.in_worker_processes(ds.to_iter_dataset(options), config)


def _write_csv(path: str, cols: dict, names: list[str]) -> None:
    with json_out.atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(cols[n] for n in names), strict=True):
            # repr: the shortest text that reads back as the same float. A fixed
            # 6 decimals rounds every P(fake) > 1 - 5e-7 to 1.000000, so an AUC
            # recomputed from the CSV would disagree with metrics.json.
            w.writerow([repr(float(v)) if isinstance(v, float | np.floating) else v for v in row])


def resolve_splits(data_dir: str, split: str) -> list[str]:
    """'test' -> ['test']; 'test+val' -> ['test', 'val']; 'all' -> every split of the build."""
    from data_prep import shards

    if split == "all":
        counts = shards.read_info(data_dir)["splits"]
        # A split whose every video failed has counts but no records (not written).
        names = sorted(
            name
            for name, c in counts.items()
            if sum(v.get("records", 0) for v in c.get("by_label", {}).values()) > 0
        )
        if not names:
            raise ValueError(f"{data_dir}: the build lists no splits; pass --split NAME")
        return names
    names = [s.strip() for s in split.split("+")]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"--split {split!r}: expected NAME, NAME+NAME (no repeats) or 'all'")
    return names


def evaluate(
    config,
    workdir: str,
    *,
    checkpoint: str | int = "best",
    split: str = "test",
    data_dir: str | None = None,
    batch_size: int | None = None,
    figures_per_class: int = 2,
    failures_per_class: int = 4,
    progress: bool = True,
    dtype: str | None = None,
    threshold: float | str | None = None,
    calibration: str | None = None,
    command: list[str] | None = None,
) -> dict:
    """Evaluates one checkpoint on one split (or several pooled: see `resolve_splits`).

    ``dtype`` computes in another dtype than the run was trained in (see
    `with_compute_dtype`); its results go to their own directory, suffixed
    with the dtype. ``threshold``: the decision threshold of ACC and the
    confusion matrices (e.g. a validation split's ``eer_threshold``; None: 0.5),
    or ``"val"`` to read that from this checkpoint's val evaluation (`thresholds`);
    results at another than 0.5 go to their own directory, suffixed ``_t<threshold>``.
    ``calibration``: ``"val"`` measures here the calibration map the val
    evaluation of this checkpoint fitted (metrics.json ``calibration.applied``).
    ``failures_per_class``: of the real videos and of each method's fakes, the
    ones most wrong at the threshold drawn by their most wrong frame to
    ``failures/`` (`failure_cases`). ``command``: the command line recorded in
    metrics.json's ``provenance`` (None: this process's command line).

    Returns ``{'metrics': doc, 'out_dir', 'metrics_json', 'scores', 'video_scores', 'roc',
    'calibration', 'attention': [png paths], 'failures': [png paths]}``.
    """
    from tqdm import tqdm

    from data_prep import shards
    from ldattn_jax.checkpointing import restore_for_inference, state_files_sha256

    started = provenance.utc_now()
    # The run's own shards by default, found also from another cwd than training's.
    run_data_dir = thresholds.run_data_dir(config, workdir)
    data_dir = data_dir or run_data_dir or config.data.dir
    if data_dir and os.path.isfile(data_dir):
        raise ValueError(
            f"shard dir {data_dir!r} is a file: pass --data the directory data_prep.build "
            "wrote (its --out), not one of its files"
        )
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"shard dir {data_dir!r} not found: pass --data DIR (the --out of data_prep.build) "
            "or set config.data.dir"
        )
    splits = resolve_splits(data_dir, split)
    source = [shards.open_split(data_dir, s, EVAL_FIELDS) for s in splits]
    split = "+".join(splits)
    n_records = sum(len(s) for s in source)
    if n_records == 0:
        raise ValueError(f"split {split!r} of {data_dir} has no records; nothing to evaluate")
    trained_dtype = str(config.model.dtype)
    config = with_compute_dtype(config, dtype)
    # The results go under WORKDIR/eval/: a workdir that cannot take them fails
    # now, not after the whole split was scored.
    writable_dir(os.path.join(workdir, "eval"), "--workdir")
    model, step = restore_for_inference(config, workdir, checkpoint)
    shards_sha256 = metrics_lib.shards_fingerprint(data_dir)
    # Another build (--data) may carry the training data's name (a held-out
    # synthetic build, FF++ at another compression): its results must not
    # overwrite those of the run's own data, and its val split is not the one
    # the run's val results were chosen on. Told by the build's fingerprint (or
    # real path), not the text of the path: config.data.dir is often relative
    # to where training ran, and --data may reach the same build by a symlink.
    own_data = thresholds.is_run_data(data_dir, config, workdir, shards_sha256)
    own_splits = tuple(splits) if own_data else ()
    # Before the split is read: a missing val result fails in a second, not after it.
    threshold, threshold_source = thresholds.resolve(
        threshold, config, workdir, step, splits=own_splits
    )
    applied = thresholds.resolve_calibration(calibration, config, workdir, step, splits=own_splits)
    predictor = Predictor(model, config, batch_size)

    cols = defaultdict(list)
    capture = DefectCapture()
    failures = FailureCases(failures_per_class, threshold)
    samples: dict[str, list] = defaultdict(list)  # method -> [(record fields, maps)]
    seen_videos: set[str] = set()
    n_batches = -(-n_records // predictor.batch_size)
    batches = iterate_batches(source, config, predictor.batch_size)
    for batch in tqdm(batches, total=n_batches, desc=f"eval {split}", disable=not progress):
        probs, maps = predictor(batch["frames"])
        if not np.all(np.isfinite(probs)):  # say so now, not after the whole split
            bad = sorted(set(np.asarray(batch["video_id"]).astype(str)[~np.isfinite(probs)]))
            raise ValueError(
                f"the model gave non-finite scores for videos {bad[:5]} (checkpoint step "
                f"{step}, compute dtype {config.model.dtype}): the checkpoint is broken"
            )
        for k in META_FIELDS:
            cols[k].extend(np.asarray(batch[k]).tolist())
        cols["score"].extend(probs.tolist())
        capture.add(maps, batch["mask"], batch["has_mask"], batch["label"], batch["method"])
        ids = np.asarray(batch["video_id"]).astype(str)
        methods = np.asarray(batch["method"]).astype(str)
        for i, (vid, label, prob) in enumerate(zip(ids, batch["label"], probs, strict=True)):
            group = group_of(label, methods[i])
            failures.add(group, vid, label, prob, functools.partial(_case, batch, probs, maps, i))
        if maps and figures_per_class:
            for i, (vid, method) in enumerate(zip(ids, methods, strict=True)):
                if vid in seen_videos or len(samples[method]) >= figures_per_class:
                    continue
                seen_videos.add(vid)
                rec = {k: np.asarray(batch[k][i]) for k in ("frames", "mask", "label", "video_id")}
                rec["mask"] = _mask_at(rec["mask"], rec["frames"].shape[1:3])
                samples[method].append((rec, float(probs[i]), {k: v[i] for k, v in maps.items()}))

    frame_cols = {k: np.asarray(v) for k, v in cols.items()}
    datasets = sorted(set(frame_cols["dataset"].astype(str).tolist()))
    dataset = "+".join(datasets)
    run_name = eval_names.run_name(
        dataset,
        split,
        step,
        other_data_sha256=None if own_data else shards_sha256,
        dtype=str(config.model.dtype) if config.model.dtype != trained_dtype else None,
        threshold=threshold if threshold != metrics_lib.DEFAULT_THRESHOLD else None,
    )
    out_dir = os.path.join(workdir, "eval", run_name)

    doc, vcols = metrics_lib.metrics_document(
        frame_cols,
        dataset=dataset,
        split=split,
        model=str(config.model.name),
        model_settings=config.model.to_dict(),
        checkpoint_step=step,
        checkpoint_which=str(checkpoint),
        compute_dtype=str(config.model.dtype),
        config_sha256=metrics_lib.config_hash(config),
        shards_sha256=shards_sha256,
        defect_capture=capture.summary(),
        threshold=threshold,
        threshold_source=threshold_source,
        calibration=applied,
        trained_on=metrics_lib.build_identity(run_data_dir),
        checkpoint_sha256=state_files_sha256(workdir, step),
        provenance=provenance.provenance(
            started, command, provenance.training_sessions(workdir, step)
        ),
    )
    # Everything is written into a hidden sibling folder and swapped in whole at
    # the end (`_swap_in`): a reader of out_dir (thresholds, compare, report)
    # sees the earlier evaluation or this one, never this one's metrics.json
    # beside the earlier one's scores or figures, whatever kills this process.
    # The real folder is what is swapped: a symlink at out_dir (results kept on
    # another disk) stays a symlink, and the staging folder lies beside its target.
    target = os.path.realpath(out_dir)
    with _result_lock(target):
        staged = _staging_dir(target)
    try:
        paths = _write_results(
            staged, config, dataset, split, step, doc, frame_cols, vcols, samples, failures,
            threshold,
        )  # fmt: skip
        with _result_lock(target):
            _keep_others(target, staged)
            earlier = _swap_in(staged, target)
    except BaseException:
        _discard(staged)
        raise
    # Outside the lock (thousands of figures, maybe): its hidden name carries
    # this live pid, so no other run touches it meanwhile.
    _discard(earlier)

    def moved(p: str) -> str:  # the path a file written under `staged` has now
        rel = os.path.relpath(p, staged) if p else os.pardir
        return p if rel.startswith(os.pardir) else os.path.join(out_dir, rel)

    paths = {
        k: [moved(p) for p in v] if isinstance(v, list) else moved(v) if k in _PATHS else v
        for k, v in paths.items()
    }
    return {"metrics": doc, "out_dir": out_dir, **paths}


# The keys of _write_results' answer that are paths (under the folder it wrote).
_PATHS = ("metrics_json", "scores", "video_scores", "roc", "calibration", "attention", "failures")
# What an evaluation writes in its folder; `_keep_others` carries the rest over.
_OWN_ENTRIES = ("metrics.json", "scores.csv", "video_scores.csv", "roc.png", "calibration.png")


def _write_results(
    out_dir, config, dataset, split, step, doc, frame_cols, vcols, samples, failures, threshold
) -> dict:
    """Writes one evaluation's files into the (new, empty) folder ``out_dir``,
    metrics.json last: what every tool reads as "the result" exists only once
    the rest does. Returns their paths."""
    from ldattn_jax import figures

    paths = {}
    paths["scores"] = os.path.join(out_dir, "scores.csv")
    _write_csv(paths["scores"], frame_cols, ["video_id", *META_FIELDS[:4], "frame_index", "score"])
    paths["video_scores"] = os.path.join(out_dir, "video_scores.csv")
    _write_csv(
        paths["video_scores"],
        vcols,
        ["video_id", "label", "method", "compression", "num_frames", "score"],
    )
    paths["roc"] = figures.roc_figure(
        {
            "frame": (frame_cols["label"], frame_cols["score"]),
            "video": (vcols["label"], vcols["score"]),
        },
        os.path.join(out_dir, "roc.png"),
        title=f"{config.model.name} on {dataset}/{split} (step {step})",
    )
    paths["calibration"] = figures.reliability_figure(
        {
            "frame": (frame_cols["label"], frame_cols["score"]),
            "video": (vcols["label"], vcols["score"]),
        },
        os.path.join(out_dir, "calibration.png"),
        title=f"{config.model.name} on {dataset}/{split} (step {step})",
    )
    attention = []
    for method in sorted(samples):
        for rec, prob, maps in samples[method]:
            name = f"{'fake' if rec['label'] else 'real'}_{method}_{rec['video_id']}"
            attention.append(
                figures.attention_overlay(
                    rec["frames"][0],
                    maps,
                    os.path.join(out_dir, "attention", eval_names.figure_stem(name) + ".png"),
                    title=f"{rec['video_id']} ({method}) P(fake) = {prob:.3f}",
                    mask=rec["mask"] if rec["mask"].any() else None,
                    each_map=True,
                )
            )
    paths["attention"] = attention
    video_score = dict(zip(vcols["video_id"], map(float, vcols["score"]), strict=True))
    paths["failures"], paths["failures_wrong_videos"] = _draw_failures(
        failures, out_dir, threshold, video_score
    )
    paths["metrics_json"] = os.path.join(out_dir, "metrics.json")
    json_out.atomic_write(paths["metrics_json"], json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return paths


# --- the swap: out_dir is replaced whole ---------------------------------------------------
# Beside out_dir, hidden (a glob of eval/*/metrics.json never sees them):
# .<name>.tmp-<host>-<pid> while this run writes, .<name>.old-<host>-<pid> for
# the earlier result in the instant between the two renames of `_swap_in`.


@contextlib.contextmanager
def _result_lock(out_dir: str):
    """Holds a lock on ``out_dir``'s parent folder while its leftovers are cleaned
    and while the earlier result's extra files are carried over and the new one
    is swapped in (moments, not the scoring, nor deleting the earlier result).
    Two evaluations of one result (the same command run twice) then each score
    in full, and the later to finish wins whole: unlocked, one could list
    out_dir while the other had it renamed aside, and crash after scoring
    (FileNotFoundError) or drop the notes kept in the folder. The folder itself
    is locked, not a lock file beside the result, so that nothing but results
    lies in eval/. A wait for the lock is said on stderr (a run stopped with
    Ctrl-Z in its swap holds it). The lock is flock(2)'s: on NFS it holds
    between the processes of one host only (Linux's NFS client keeps flock on a
    folder local); where a file system refuses it, the run goes on without,
    and `_swap_in`'s retries are what is left."""
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            print(
                f"evaluate: waiting for another evaluation writing into {parent} "
                "(a lock on that folder) to swap its result in",
                file=sys.stderr,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # EBADF / ENOLCK / EOPNOTSUPP
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _sibling(out_dir: str, kind: str) -> str:
    parent, name = os.path.split(out_dir)
    return os.path.join(parent, f".{name}.{kind}-{leftovers.tag()}")


def _staging_dir(out_dir: str) -> str:
    """A new, empty hidden folder beside ``out_dir`` for this run to write into,
    after `_clean_leftovers`."""
    _clean_leftovers(out_dir)
    staged = _sibling(out_dir, "tmp")
    _discard(staged)  # of an earlier process of this pid (gone: the pid is ours)
    os.makedirs(staged)
    return staged


def _clean_leftovers(out_dir: str) -> None:
    """What killed runs of this machine left beside ``out_dir``: their half-written
    folders go; an earlier result set aside by a run killed between `_swap_in`'s
    two renames is put back where out_dir is missing (it is a whole result),
    else goes. Folders of live processes and of other machines (a shared
    file system) are left alone."""
    parent, name = os.path.split(out_dir)
    pattern = re.compile(rf"\.{re.escape(name)}\.(tmp|old)-{re.escape(leftovers.HOST)}-(\d+)")
    for entry in sorted(os.listdir(parent)):
        m = pattern.fullmatch(entry)
        # Own pid: this run has not begun to write (`_staging_dir` calls this first).
        if not m or not leftovers.gone(int(m[2]), own=True):
            continue  # not this host's, or another evaluation of this result, running now
        path = os.path.join(parent, entry)
        if m[1] == "old" and not os.path.lexists(out_dir):
            os.rename(path, out_dir)
        else:
            _discard(path)


def _discard(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _keep_others(out_dir: str, staged: str) -> None:
    """Files in ``out_dir`` that no evaluation wrote (a report's --json put there,
    notes) are kept through the swap, hard-linked (else copied) into
    ``staged``. An earlier evaluation's own files are not: its figures would
    stand beside this one's."""
    if not os.path.isdir(out_dir):
        return
    for entry in sorted(os.listdir(out_dir)):
        src = os.path.join(out_dir, entry)
        if atomic_files.is_temp_name(entry):
            continue  # a killed writer's half file: not a note to keep
        if entry in ("attention", "failures") and os.path.isdir(src):
            for sub in sorted(os.listdir(src)):
                if sub.endswith(".png") or (entry == "failures" and sub == CASES_CSV):
                    continue
                os.makedirs(os.path.join(staged, entry), exist_ok=True)
                _link_or_copy(os.path.join(src, sub), os.path.join(staged, entry, sub))
        elif entry not in _OWN_ENTRIES:
            _link_or_copy(src, os.path.join(staged, entry))


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.lexists(dst):
        return  # this run wrote one of that name
    if os.path.isdir(src) and not os.path.islink(src):
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        return
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _swap_in(staged: str, out_dir: str) -> str:
    """Replaces ``out_dir`` by the finished folder ``staged``: exchanged with the
    earlier result in one atomic step where the file system can
    (`atomic_files.swap_paths`), after which the earlier one lies at
    ``staged``; a reader finds the earlier result or the new one, never none.
    Elsewhere the earlier result is renamed aside and ``staged`` renamed in: a
    rename is atomic, but between the two out_dir is missing (never mixed),
    and a run killed there leaves the earlier result aside for
    `_clean_leftovers`. Returns where the earlier result now lies, hidden, for
    the caller to delete."""
    for d, _, _ in os.walk(staged):  # the folders' entries on disk before the rename
        json_out.fsync_dir(d)
    if os.path.isdir(out_dir) and atomic_files.swap_paths(staged, out_dir):
        json_out.fsync_dir(os.path.dirname(out_dir))
        return staged  # the earlier result; killed before deleted, `_clean_leftovers` ends it
    aside = _sibling(out_dir, "old")
    _discard(aside)
    try:
        for attempt in range(3):
            with contextlib.suppress(FileNotFoundError):  # none yet
                os.rename(out_dir, aside)
            try:
                os.rename(staged, out_dir)
                break
            except OSError as e:
                # Another evaluation of the same result renamed its own in between.
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 2:
                    raise
                _discard(aside)
    except BaseException:
        if os.path.isdir(aside) and not os.path.lexists(out_dir):
            os.rename(aside, out_dir)  # the earlier result back, rather than none
        raise
    json_out.fsync_dir(os.path.dirname(out_dir))
    return aside


# failures/cases.csv: one row per failure PNG; video_wrong is 1 when the video's
# own call (its mean frame score against the threshold) is wrong too.
CASES_CSV = "cases.csv"
CASES_COLUMNS = [
    "group", "rank", "video_id", "method", "frame_index", "frame_score", "video_score",
    "video_wrong", "png",
]  # fmt: skip


def _mask_at(mask: np.ndarray, shape) -> np.ndarray:
    """The region mask at the frames' (height, width): shards built at another size."""
    if mask.shape == tuple(shape):
        return mask
    return cv2.resize(mask, tuple(shape)[::-1], interpolation=cv2.INTER_NEAREST)


def _case(batch, probs, maps, i: int) -> dict:
    """What a failure-case figure needs of the batch's i-th record (copied: the
    loader reuses its batch buffers)."""
    return {
        "face": np.array(batch["frames"][i][0]),
        "mask": np.array(batch["mask"][i]),
        "maps": {k: np.array(v[i]) for k, v in maps.items()},
        "prob": float(probs[i]),
        **{k: str(np.asarray(batch[k][i])) for k in ("video_id", "method", "frame_index")},
    }


def _draw_failures(
    failures: FailureCases, out_dir: str, threshold: float, video_score: dict[str, float]
) -> tuple[list[str], int]:
    """failures/<group>_<rank>_<video>_f<frame>_<hash>.png (group: real or
    fake_<method>; hash: `eval_names.figure_stem`'s of the name before it),
    rank 0 the most wrong: the key frame and the mean of each module's maps, as
    the paper's Fig. 9 shows them; failures/cases.csv lists them with their
    video's score and call. An earlier evaluation's figures there go first.

    A case is a frame on the wrong side of the threshold; its video, scored by
    the mean of its frames, may still be called right. The title and the CSV
    say which, so that a reader does not count frame failures as wrong videos.
    Returns the PNG paths and how many of their videos are called wrong."""
    from ldattn_jax import figures

    fail_dir = os.path.join(out_dir, "failures")
    for stale in glob.glob(os.path.join(fail_dir, "*.png")) + [os.path.join(fail_dir, CASES_CSV)]:
        if os.path.exists(stale):
            os.remove(stale)
    paths, rows = [], []
    for group, rank, case in failures.cases():
        name = f"{group}_{rank}_{case['video_id']}_f{case['frame_index']}"
        face = case["face"]
        mask = _mask_at(case["mask"], face.shape[:2])
        # A failure frame is called the other class: a real one fake, a fake one real.
        label, called = ("real", "fake") if group == "real" else ("fake", "real")
        v = video_score[case["video_id"]]
        video_wrong = (v > threshold) != (label == "fake")
        video_call = "fake" if v > threshold else "real"
        path = figures.attention_overlay(
            face,
            case["maps"],
            os.path.join(fail_dir, eval_names.figure_stem(name) + ".png"),
            title=f"{case['video_id']} ({case['method']}) frame {case['frame_index']}: "
            f"{label}, called {called}, P(fake) = {case['prob']:.3f} "
            f"(threshold {eval_names.threshold_text(threshold)}); video P(fake) = {v:.3f}, "
            f"called {video_call} ({'wrong' if video_wrong else 'right'})",
            mask=mask if mask.any() else None,
        )
        paths.append(path)
        rows.append(
            [group, rank, case["video_id"], case["method"], case["frame_index"],
             repr(case["prob"]), repr(v), int(video_wrong), os.path.basename(path)]
        )  # fmt: skip
    if rows:
        with json_out.atomic_open(os.path.join(fail_dir, CASES_CSV), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CASES_COLUMNS)
            w.writerows(rows)
    return paths, sum(r[7] for r in rows)


def summary_lines(doc: dict) -> list[str]:
    """Human-readable lines: overall and per-method frame/video AUC and ACC."""

    def fmt(x):
        return "  n/a " if x is None else f"{x:6.4f}"

    lines = [f"{'subset':<24} {'frame AUC':>9} {'frame ACC':>9} {'video AUC':>9} {'video ACC':>9}"]
    rows = [("all", doc)] + [(f"real+{m}", d) for m, d in doc["per_method"].items()]
    for name, d in rows:
        f, v = d["frame"], d["video"]
        vals = (f["auc"], f["acc"], v["auc"], v["acc"])
        lines.append(f"{name:<24} " + " ".join(f"{fmt(x):>9}" for x in vals))

    def both_levels(key: str, text) -> list[str]:
        # A key a document of an older version lacks (or null) is left out.
        levels = (("frame", doc["frame"]), ("video", doc["video"]))
        return [f"{level} {text(b)}" for level, b in levels if b.get(key) is not None]

    def interval(b, key: str, what: str) -> str:
        pair = b[key]
        text = f"[{pair[0]:.4f}, {pair[1]:.4f}]"
        # No resample varied (e.g. a perfect ranking): the percentile interval
        # would be a point, so metrics gives the exact bound instead; say which.
        if f"{what}:" in (b.get("ci95_note") or ""):
            text += " (no resample varied: exact bound, see ci95_note)"
        return text

    ci = both_levels("auc_ci95", lambda b: interval(b, "auc_ci95", "AUC"))
    if ci:
        lines.append(f"AUC 95% interval (bootstrap over videos): {', '.join(ci)}")
    ci = both_levels("acc_ci95", lambda b: interval(b, "acc_ci95", "ACC"))
    if ci:
        lines.append(f"ACC 95% interval (same resamples): {', '.join(ci)}")
    cal = both_levels("ece", lambda b: f"ECE {b['ece']:.4f}, Brier {b['brier']:.4f}")
    if cal:
        lines.append(f"calibration (ECE 0: a score p is fake p of the time): {'; '.join(cal)}")
    lines.append(acc_threshold_line(doc))
    t = doc["video"]["eer_threshold"]
    if t is not None:
        # The offset of a well-ranked model shows here; the threshold is only
        # honest on data other than that it was chosen on.
        use = (
            f"pass --threshold {eval_names.threshold_text(t)} (or --threshold val) to evaluate "
            "test or to predict"
            if doc["split"] == "val"
            else "to apply one, choose it on val: evaluate --split val"
        )
        lines.append(
            f"video-level EER threshold of this split: {eval_names.threshold_text(t)} ({use})"
        )
    lines.extend(calibration_lines(doc))
    dc = doc.get("defect_capture") or {}
    for module, d in (dc.get("modules") or {}).items():
        a = d["all"]
        lines.append(
            f"defect capture {module:<9} mass {a['mass_share']:.3f} (uniform "
            f"{a['mass_share_uniform']:.3f}), pointing {a['pointing_hit_rate']:.3f} "
            f"(uniform {a['pointing_uniform']:.3f}), contrast {a['map_contrast']:.2g}, n = {a['n']}"
        )
    return lines


def acc_threshold_line(doc: dict) -> str:
    """The threshold the ACC columns (and acc_ci95) are at, and where it came from:
    a default 0.5 is said as such, never left for the reader to assume."""
    t = doc["threshold"]
    # Documents written before threshold_source existed had only --threshold P.
    default = t == metrics_lib.DEFAULT_THRESHOLD and doc.get("threshold_source") in (
        None,
        thresholds.DEFAULT_SOURCE,
    )
    if not default:
        source = doc.get("threshold_source", thresholds.GIVEN_SOURCE)
        return f"ACC at {thresholds.describe(t, source)}"
    how = (
        "the EER threshold of this split, below, is where to choose one"
        if doc["split"] == "val"
        else "pass --threshold val to use the video-level EER threshold chosen on val"
    )
    return f"ACC at threshold {eval_names.threshold_text(t)} (default, not chosen on data; {how})"


def calibration_lines(doc: dict) -> list[str]:
    """The even-odds calibration: val's fitted map, or val's map measured here."""
    cal = doc.get("calibration") or {}  # older documents have none
    lines = []
    fit = cal.get("fit")
    if fit and doc["split"] == "val":
        lines.append(
            f"calibration at even odds fitted on these videos: P = sigmoid({fit['a']:.4f} "
            f"* logit(score) {fit['b']:+.4f}) (predict/evaluate --calibration val apply it)"
        )
    applied = cal.get("applied")
    if applied:
        before, after = applied["ece_even_odds_before"], applied["ece_even_odds_after"]
        measured = (
            f"ECE at even odds {before:.4f} before, {after:.4f} after"
            if before is not None
            else "not measurable (one class)"
        )
        lines.append(f"calibration of {applied['source']} on this split's videos: {measured}")
    return lines


def _parse_checkpoint(text: str) -> str | int:
    if text in ("best", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"--checkpoint {text!r}: use best, latest or a step number")


def local_workdir(parser: argparse.ArgumentParser, workdir: str) -> str:
    """The run's directory as an absolute local path (orbax refuses relative ones).

    A pod run's workdir is on GCS (launch/tpu_pod.sh), but evaluation and
    prediction write their results beside the run with local file I/O: a
    gs:// path would become a local folder named 'gs:'. Say how to copy it.
    """
    if re.match(r"^[a-z][a-z0-9+.-]*://", workdir):
        url = workdir.rstrip("/")
        local = "runs/" + url.rsplit("/", 1)[-1]
        parser.error(
            f"--workdir {workdir}: this reads a run from local disk; copy what it needs "
            f"first (mkdir -p {local} && gcloud storage cp -r {url}/config.json "
            f"{url}/checkpoints {local}/), then pass --workdir {local}; or mount the bucket "
            "(gcsfuse) and pass the run's path under the mount"
        )
    return os.path.abspath(workdir)


def positive_int(text: str) -> int:
    """argparse type of counts (--batch_size): 0 or -3 would be read as 'default' or 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse type of counts where 0 means none (--failures)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 0")
    return value


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    from ldattn_jax.models.lda import COMPUTE_DTYPES

    parser.add_argument(
        "--dtype",
        default=None,
        choices=COMPUTE_DTYPES,
        help="compute dtype (default: the run's config.model.dtype); bfloat16 is faster, "
        "its scores differ slightly (docs/evaluation.md)",
    )


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="training workdir (checkpoints/, config.json)")
    p.add_argument("--config", default=None, help="config file; default WORKDIR/config.json")
    p.add_argument("--checkpoint", default="best", type=_parse_checkpoint)
    p.add_argument("--split", default="test", help="test | val | train | NAME+NAME (pooled) | all")
    p.add_argument("--data", default=None, help="shard dir; default config.data.dir")
    p.add_argument("--batch_size", type=positive_int, default=None)
    p.add_argument("--no_progress", action="store_true")
    p.add_argument(
        "--failures",
        type=non_negative_int,
        default=4,
        help="of the real videos and of each method's fakes, how many of those most wrong at "
        "the threshold to draw to failures/ by their most wrong frame (paper V-E; 0: none)",
    )
    add_dtype_argument(p)
    thresholds.add_threshold_argument(p)
    thresholds.add_calibration_argument(p, "measure the ECE of this split's video scores")
    args, overrides = p.parse_with_overrides(argv)
    args.workdir = local_workdir(p, args.workdir)
    from ldattn_jax.config_utils import ConfigError

    try:
        config = load_run_config(args.workdir, args.config, overrides)
    except (ConfigError, FileNotFoundError) as e:
        p.error(str(e))  # exit 2: the command line asks for what is not there
    try:
        out = evaluate(
            config,
            args.workdir,
            checkpoint=args.checkpoint,
            split=args.split,
            data_dir=args.data,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            dtype=args.dtype,
            threshold=args.threshold,
            calibration=args.calibration,
            failures_per_class=args.failures,
            command=[*p.prog.split(), *(sys.argv[1:] if argv is None else argv)],
        )
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as e:
        # Errors that name the file / split / checkpoint / output folder
        # (OutputDirError) and what to do: one line, as train and predict print
        # them, not a traceback.
        text = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"evaluate: error: {text}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(out["metrics"])))
    print(f"metrics: {out['metrics_json']}\nroc: {out['roc']}\ncalibration: {out['calibration']}")
    print(f"attention: {os.path.join(out['out_dir'], 'attention')} ({len(out['attention'])} PNGs)")
    print(
        f"failures: {os.path.join(out['out_dir'], 'failures')} ({len(out['failures'])} PNGs: "
        "of the real videos and of each method's fakes those with the frames most wrong at "
        f"the threshold, one frame each; {out['failures_wrong_videos']} of these videos are "
        f"called wrong as a whole: {CASES_CSV})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
