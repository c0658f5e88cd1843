"""Loading `configs/*.py` files, command-line overrides and the training defaults.

Configs are plain Python files with a `get_config()` that returns an
`ml_collections.ConfigDict` (big_vision / Flax-examples habit). Overrides are
`--config.a.b=value` strings typed by the value already in the config, so a
typo or a wrong type fails before anything is compiled, naming the key and the
nearest valid keys.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections

__all__ = [
    "ConfigError",
    "apply_overrides",
    "check_optimizer",
    "check_step_counts",
    "flat_keys",
    "load_config",
    "load_config_module",
    "training_defaults",
    "write_config",
]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to change."""


def training_defaults() -> ml_collections.ConfigDict:
    """The training and data sections shared by every config (paper V-A values).

    Config files start from these and change only what differs, so the keys
    stay in sync across ffpp / ffpp_c40 / celebdf / demo (docs/training.md
    explains every key).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Paper V-A: batch 32, SGD momentum 0.9, lr 3e-4, 20 epochs, lr halved every 5.
    c.batch_size = 32  # global batch, split over all devices of all processes
    c.num_epochs = 20
    c.total_steps = -1  # -1 = num_epochs * steps_per_epoch; N > 0 caps the run
    c.lr = 3e-4
    c.lr_halve_every_epochs = 5
    c.optimizer = "sgd"  # the paper's; 'adam' for short runs from random init (demo)
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 0.0  # L2 term wd * w added to the gradient of kernels (params named *kernel)
    c.grad_clip_norm = 0.0  # 0 = off; > 0 clips the global gradient norm
    c.log_every = 50
    c.eval_every = -1  # steps between validations (and at the end); -1 = once per epoch; 0 = never
    c.eval_max_batches = -1  # -1 = the whole validation split
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3  # the last K, plus the best by validation AUC
    c.async_checkpointing = True
    # Device mesh: ('data', -1) takes all devices; an ('fsdp', k) axis shards
    # large kernels k ways (ldattn_jax/sharding.py). The batch is split over both.
    c.mesh = [("data", -1), ("fsdp", 1)]
    c.fsdp_min_size = 2**18  # arrays with fewer elements stay replicated

    c.data = ml_collections.ConfigDict()
    c.data.dir = ""  # the --out of data_prep.build
    c.data.train_split = "train"
    c.data.val_split = "val"  # checkpoints are chosen on this split, never on test
    c.data.balance = "none"  # 'none' | 'sample' (oversample the minority) | 'loss_weight'
    c.data.flip = True  # horizontal flip, one decision per stack
    # How config.seed orders the training stream (input_pipeline.STREAM_VERSION):
    # a run begun under version 1 resumes with it (train reads its config.json).
    c.data.stream_version = 2
    c.data.worker_count = 0  # grain worker processes (0 = decode in the main process)
    c.data.worker_buffer_size = 2
    c.data.read_threads = 4  # threads reading records before batching
    c.data.prefetch = 4  # batches read ahead (at least read_threads)
    return c


# Step-count keys of training: (key, special values allowed besides N >= 1, meaning,
# value to suggest). The loop takes `step % key`, so 0 would divide by zero
# mid-run; other values outside these would silently mean something else.
_STEP_KEYS = (
    # Not a step count, but the same rule: 0 divides by zero, < 0 reads as no batch.
    ("batch_size", {}, "global batch, all devices of all processes", 32),
    ("total_steps", {-1: "num_epochs * steps_per_epoch"}, "steps to train", -1),
    ("log_every", {}, "steps between progress lines", 50),
    ("eval_every", {-1: "once per epoch", 0: "never"}, "steps between validations", -1),
    ("eval_max_batches", {-1: "the whole split"}, "validation batches", -1),
    (
        "checkpoint_every",
        {},
        "steps between periodic checkpoints; validations, the end and SIGTERM save too",
        1000,
    ),
    ("keep_checkpoints", {}, "last checkpoints kept", 3),
    ("lr_halve_every_epochs", {0: "constant lr"}, "epochs between lr halvings", 5),
)


def check_step_counts(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a step-count key out of range (e.g. log_every=0)."""
    keys = [*_STEP_KEYS]
    if config.total_steps == -1:
        keys.append(("num_epochs", {}, "epochs to train, as total_steps=-1", 20))
    for key, special, meaning, example in keys:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config.{key}={value!r}: expected an integer ({meaning})")
        if value >= 1 or value in special:
            continue
        allowed = "".join(f"{v} ({what}) or " for v, what in special.items())
        raise ConfigError(
            f"config.{key}={value} is out of range: use {allowed}N >= 1 ({meaning}), "
            f"e.g. --config.{key}={example}"
        )


def check_optimizer(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for optimizer values that would train nonsense silently:
    lr <= 0 (none or gradient ascent), momentum outside [0, 1) (SGD's running sum
    grows without bound), a negative weight_decay or grad_clip_norm (read as off)."""
    # (key, test, what it must be, value to suggest)
    rules = (
        ("lr", lambda v: v > 0, "> 0 (0 trains nothing, < 0 climbs the loss)", 3e-4),
        ("momentum", lambda v: 0 <= v < 1, "in [0, 1) (SGD; 0 = none)", 0.9),
        ("weight_decay", lambda v: v >= 0, ">= 0 (0 = off)", 0.0),
        ("grad_clip_norm", lambda v: v >= 0, ">= 0 (0 = off)", 0.0),
    )
    for key, ok, must, example in rules:
        value = config[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and ok(value)):
            raise ConfigError(
                f"config.{key}={value!r}: must be {must}, e.g. --config.{key}={example}"
            )


def load_config_module(path: str | os.PathLike):
    """Imports a config file by path (config files use this to extend a sibling)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(
            f"config file {path!r} does not exist; pass one of configs/*.py "
            "(e.g. --config configs/ffpp.py)"
        )
    if not path.endswith(".py"):
        # A run's WORKDIR/config.json is a record, not a config: JSON has no tuples
        # (config.mesh) and overrides are typed by the values a .py file holds.
        raise ConfigError(
            f"config file {path!r} is not a Python config file: pass one of configs/*.py, "
            "with --config.KEY=VALUE for the values a run's config.json records"
        )
    name = "ldattn_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"config file {path}, line {e.lineno}: {e.msg}; fix the file") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config() function")
    return module


def load_config(
    path: str | os.PathLike, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """Loads `path`'s get_config() and applies `--config.a.b=value` overrides.

    Accepts an optional ':arg' suffix (`configs/ffpp.py:runlocal`) that is
    passed to get_config(arg) when the file supports it.
    """
    path = os.fspath(path)
    arg = None
    if ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    module = load_config_module(path)
    args = () if arg is None else (arg,)
    try:
        inspect.signature(module.get_config).bind(*args)
    except TypeError:
        # Checked, not caught around the call: a TypeError inside get_config is a bug there.
        fix = f"takes no argument: drop ':{arg}'" if args else f"needs one: --config {path}:ARG"
        raise ConfigError(f"config file {path!r}: get_config() {fix}") from None
    config = module.get_config(*args)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return apply_overrides(config, overrides)


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All dotted leaf keys ('data.dir', 'model.name', ...)."""
    keys = []
    for k, v in config.items():
        full = f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flat_keys(v, full + "."))
        else:
            keys.append(full)
    return keys


def _split_overrides(overrides: Iterable[str]) -> list[tuple[str, str]]:
    """['--config.a=1', '--config.b', '2'] → [('a', '1'), ('b', '2')]."""
    items = list(overrides)
    out = []
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--config."):
            raise ConfigError(
                f"override {item!r} is not of the form --config.KEY=VALUE "
                "(e.g. --config.batch_size=64)"
            )
        body = item[len("--config.") :]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            key, value = body, items[i + 1]
            i += 1
        else:
            raise ConfigError(f"override {item!r} has no value; write --config.{body}=VALUE")
        out.append((key, value))
        i += 1
    return out


def _parse_value(key: str, text: str, old: Any) -> Any:
    """Parses `text` into the type of the existing value `old`."""
    if isinstance(old, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected true/false")
    if isinstance(old, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ConfigError(
            f"--config.{key}={text!r}: cannot parse as a Python literal of type "
            f"{type(old).__name__} (current value {old!r})"
        ) from e
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, list | tuple) and isinstance(value, list | tuple):
        # Keep the container type of the default ([('data', -1)] stays a list of tuples).
        value = type(old)(tuple(v) if isinstance(v, list) else v for v in value)
    # bool is an int to isinstance: batch_size=True would pass as 1.
    wrong_bool = isinstance(value, bool) and not isinstance(old, bool)
    if old is not None and (wrong_bool or not isinstance(value, type(old))):
        raise ConfigError(
            f"--config.{key}={text!r} has type {type(value).__name__}, but the config "
            f"holds a {type(old).__name__} ({old!r})"
        )
    return value


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies overrides in order; an unknown key names the nearest valid keys."""
    valid = flat_keys(config)
    for key, text in _split_overrides(overrides):
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ConfigError(f"unknown config key {key!r}{hint} (see docs/training.md)")
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = _parse_value(key, text, node[leaf])
    return config


def check_storage(workdir: str, data_dir: str | None) -> None:
    """ConfigError, before any device work, where a path cannot be used here.

    A gs:// workdir (a pod's: every host writes its shards of one checkpoint)
    goes through etils, which needs gcsfs for Google Cloud Storage; without it
    the run would stop on an ImportError deep in the first file it writes. The
    shards are read as local files (grain's ArrayRecord reader), so a gs://
    ``data.dir`` cannot be opened at all: copy it or mount the bucket.
    """
    if str(workdir).startswith("gs://") and not any(
        importlib.util.find_spec(m) for m in ("gcsfs", "tensorflow")
    ):
        raise ConfigError(
            f"--workdir {workdir} is on Google Cloud Storage, which needs gcsfs here: "
            "pip install -e '.[gcs]' (launch/tpu_pod.sh installs it), or pass a local "
            "or shared-filesystem workdir"
        )
    if data_dir and "://" in str(data_dir):
        raise ConfigError(
            f"config.data.dir={data_dir!r}: the shards are read as local files; copy them to "
            "each host (gcloud storage cp -r) or mount the bucket there (gcsfuse) at one path "
            "on every host, and pass that path"
        )


def write_config(config: ml_collections.ConfigDict, path: str | os.PathLike) -> None:
    """Writes the resolved config as JSON (what the run really used); gs:// works too."""
    from etils import epath

    text = json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True) + "\n"
    epath.Path(path).write_text(text)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def flat_values(config: ml_collections.ConfigDict) -> dict:
    """{'model.name': 'lda_st', ...}: a config's leaves by dotted key, as its JSON has them."""
    return _flat(json.loads(config.to_json()))


def check_resume_config(config: ml_collections.ConfigDict, path: str | os.PathLike) -> list[str]:
    """Compares `config` with the config.json a workdir was trained with.

    A different model section would restore a checkpoint into another network
    (or silently reuse a finished run for a new experiment), and another
    batch_size would resume the data stream and the lr schedule at the wrong
    place (both count batches of the old size: the iterator would skip or repeat
    samples, the epochs would be miscounted), and another seed, training split or
    class balance (`STREAM_KEYS`) another stream under the same position, and
    another optimizer (sgd <-> adam) another optimizer state: those are errors
    naming the keys.
    Other differences (e.g. a larger total_steps to extend a run, clipping or
    weight decay switched on) are allowed
    and returned so the caller can log them.
    """
    from etils import epath

    path = epath.Path(path)
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        doc = e
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        # As evaluate._read_run_config. Without it the run cannot tell whether its
        # checkpoints hold this config's model; deleting it resumes as this config.
        why = f"unreadable ({doc})" if isinstance(doc, Exception) else "no 'model' section"
        raise ConfigError(
            f"{path}: {why}; it records the config the run's checkpoints were trained with. "
            "Restore it, delete it to resume with this config (its model must be the "
            "checkpoints'), or start a new --workdir."
        )
    old = _flat(doc)
    # A config.json written before the key existed: its run's stream is version 1
    # (data_stream.adopt_recorded_version gives the resume the same).
    old.setdefault("data.stream_version", 1)
    old.setdefault("optimizer", "sgd")  # the only one before the key existed
    new = flat_values(config)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    model = [k for k in changed if k.startswith("model.")]
    if model:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in model)
        raise ConfigError(
            f"{path} was trained with another model ({diffs}); resuming would load its "
            "checkpoints into a different network. Use a new --workdir, or the old values."
        )
    if "batch_size" in changed:
        raise ConfigError(
            f"{path} was trained with batch_size {old.get('batch_size')!r}, this run has "
            f"{new.get('batch_size')!r}; the saved data position and lr schedule count batches "
            f"of {old.get('batch_size')!r}. Resume with --config.batch_size="
            f"{old.get('batch_size')}, or start a new --workdir."
        )
    if "optimizer" in changed:
        # sgd keeps a momentum trace, adam two moments: the checkpoints' optimizer
        # state is not the new one's (clipping and weight decay are free to change:
        # schedules.make_optimizer keeps the state's layout).
        raise ConfigError(
            f"{path} was trained with optimizer {old.get('optimizer')!r}, this run has "
            f"{new.get('optimizer')!r}; its checkpoints hold that optimizer's state. Resume "
            f"with --config.optimizer={old.get('optimizer')}, or start a new --workdir."
        )
    stream = [k for k in STREAM_KEYS if k in changed]
    if "data.balance" in stream and "sample" not in (
        old.get("data.balance"),
        new.get("data.balance"),
    ):
        stream.remove("data.balance")  # 'none' <-> 'loss_weight' reweights the loss only
    if stream:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in stream)
        flags = " ".join(f"--config.{k}={old.get(k)!r}" for k in stream)
        raise ConfigError(
            f"{path} was trained with another data stream ({diffs}); the saved data "
            "position counts elements of the old stream's epochs, so the rest of this "
            f"epoch would skip some samples and repeat others. Resume with {flags}, "
            "or start a new --workdir."
        )
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]


# balance counts only to or from 'sample' (check_resume_config).
# Keys that define the order of the training stream (input_pipeline): the saved
# grain position is an element count into it. data.dir is not one: the same
# shards copied elsewhere (a local SSD) are the same stream.
STREAM_KEYS = ("seed", "data.train_split", "data.balance", "data.stream_version")
