"""WORKDIR/data_stream.json: the training stream a run's saved data position counts in.

A checkpoint's data position is a count of elements of one shuffled stream:
a permutation of the train split's samples per epoch. config.json pins the keys
that order it (seed, train split, balance: `config_utils.STREAM_KEYS`), but
not the build under `data.dir`, which may move (a copy on a local SSD is the
same stream). Another build with another number of records is another stream:
the rest of the epoch would skip some records and repeat others, and the lr
schedule, counted in epochs of the old length, would jump (back up, on a larger
build). This file records what the position counts in, so that a resume on
another build stops with a message instead.

It also records the stream's version (config.data.stream_version, which
config.json pins; `adopt_recorded_version` gives a run begun before that key
existed the stream it started with).
"""

from __future__ import annotations

import json
import logging

from etils import epath

from ldattn_jax import input_pipeline, json_out
from ldattn_jax.config_utils import ConfigError

log = logging.getLogger(__name__)

FILE = "data_stream.json"
# Where two builds differ as streams; the rest of the file is for people.
_STREAM_FIELDS = ("samples_per_epoch", "train_records")


def describe(config, train_records: int, counts, samples_per_epoch: int) -> dict:
    """This run's stream, as the file records it."""
    return {
        "stream_version": input_pipeline.config_stream_version(config),
        "train_split": config.data.train_split,
        "train_records": int(train_records),
        "real": int(counts.real),
        "fake": int(counts.fake),
        "balance": config.data.balance,
        "samples_per_epoch": int(samples_per_epoch),
        "data_dir": str(config.data.dir),
    }


def read(workdir) -> dict | None:
    """The workdir's record, None if it has none; a damaged one is a ConfigError."""
    path = epath.Path(workdir) / FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        doc = e
    if not isinstance(doc, dict) or not isinstance(doc.get("stream_version"), int):
        raise ConfigError(
            f"{path}: unreadable ({doc if isinstance(doc, Exception) else 'no stream_version'});"
            " it records the training stream the run's checkpoints count their data position "
            "in. Restore it, or delete it to resume without that check."
        )
    return doc


def adopt_recorded_version(config, workdir) -> None:
    """Sets config.data.stream_version to 1 for a run begun before it existed.

    Its config.json has no data.stream_version: its checkpoints count their data
    position in version 1's stream, which its resume must go on with (version 2
    reorders every seed but 0). A run of this code records its version there, so
    config_utils.check_resume_config then treats it like seed or train split.
    """
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return  # check_resume_config names a damaged config.json
    if isinstance(data, dict) and "stream_version" not in data:
        with config.unlocked():  # a config without the key (an older config file)
            config.data.stream_version = 1
        log.warning(
            "%s records no data.stream_version: a run begun before it existed; "
            "it resumes with the training stream it began (version 1)",
            path,
        )


def check_resume(workdir, stream: dict) -> None:
    """Stops a resume whose train split is another stream than the checkpoints'."""
    old = read(workdir)
    if old is None:
        return
    changed = [k for k in _STREAM_FIELDS if old.get(k) != stream[k]]
    if not changed:
        return
    raise ConfigError(
        f"{epath.Path(workdir) / FILE}: the run's checkpoints were trained on a "
        f"{old.get('train_split')!r} split of {old.get('train_records')} records "
        f"({old.get('real')} real + {old.get('fake')} fake, {old.get('samples_per_epoch')} "
        f"samples per epoch) from {old.get('data_dir')}; config.data.dir={stream['data_dir']} "
        f"holds {stream['train_records']} ({stream['real']} real + {stream['fake']} fake, "
        f"{stream['samples_per_epoch']} per epoch). The saved data position and the lr "
        "schedule count epochs of the old stream: resuming would skip some records, "
        "repeat others and move the lr. Point --config.data.dir at the build the run "
        "began on, or start a new --workdir."
    )


def write(workdir, stream: dict) -> None:
    """Records `stream` (process 0, once the checkpoint is restored or initialised):
    whole or not at all on a local disk; a gs:// object is written whole anyway."""
    text = json.dumps(stream, indent=2, sort_keys=True) + "\n"
    if "://" in str(workdir):
        (epath.Path(workdir) / FILE).write_text(text)
    else:
        json_out.atomic_write(epath.Path(workdir) / FILE, text)
