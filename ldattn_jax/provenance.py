"""What produced a result: the exact files, model and software, for a record.

A forensic score is evidence only with its chain of custody: which file was
analysed (its sha256, not just a path that can be overwritten), by which model
(the checkpoint's files, not a step number that a retrained workdir reuses),
with which code and libraries (decode and face detection differ between
OpenCV / dlib versions, and so do scores). `evaluate` and `predict` write
`provenance(...)` into their JSON so a number can be reproduced or challenged
later.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

from data_prep.fingerprint import file_sha256, hash_into

__all__ = ["file_sha256", "tree_sha256", "package_versions", "code_version", "environment",
           "provenance", "utc_now", "record_training_session", "training_sessions",
           "training_data", "data_identity"]  # fmt: skip

# The pinned packages whose versions can move a score (pyproject.toml).
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "array-record",
    "tensorflow-datasets",
    "opencv-python-headless",
    "dlib-bin",
    "face-recognition-models",
    "ml-collections",
    "numpy",
    "scipy",
    "scikit-learn",
)


def tree_sha256(directory: str | os.PathLike) -> str:
    """sha256 over every file under ``directory``: relative path, size and bytes, sorted.

    Two copies of a checkpoint hash alike wherever they lie; a retrained
    checkpoint at the same step does not.
    """
    root = os.fspath(directory)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"tree_sha256: {root!r} is not a directory")
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            h.update(f"{rel}\0{os.path.getsize(path)}\0".encode())
            hash_into(h, path)
    return h.hexdigest()


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution; None where it is not installed."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(repo: str, *args: str) -> str | None:
    try:
        p = subprocess.run(
            ["git", "-C", repo, *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git on the machine
    return p.stdout.strip() if p.returncode == 0 else None


def code_version(repo: str | None = None) -> dict:
    """{'ldattn_jax', 'git_commit', 'git_dirty'}: the package's version and, when it
    runs from a git checkout of this project (``repo``, default the folder above
    the package), the commit and whether tracked files differ from it (None
    where that cannot be told: an installed copy, no git)."""
    from ldattn_jax import __version__

    # Only the project's own checkout: a copy installed inside some other
    # repository must not be credited with that repository's commit.
    repo = repo or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = dirty = None
    if os.path.exists(os.path.join(repo, ".git")):
        commit = _git(repo, "rev-parse", "HEAD")
        status = _git(repo, "status", "--porcelain", "--untracked-files=no")
        dirty = None if commit is None or status is None else bool(status)
    return {"ldattn_jax": __version__, "git_commit": commit, "git_dirty": dirty}


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def environment(command: list[str] | None = None) -> dict:
    """Code, Python, platform, devices, library versions and the command line
    (None: this process's own)."""
    import jax

    devices = jax.devices()
    return {
        **code_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "count": len(devices),
        },
        "packages": package_versions(),
        # orig_argv: the interpreter's own command line (python -m ldattn_jax.demo), where
        # argv would give only the module's file path.
        "command": list(sys.orig_argv if command is None else command),
    }


def provenance(
    started_utc: str, command: list[str] | None = None, training: list[dict] | None = None
) -> dict:
    """The ``provenance`` block of metrics.json / predictions.json.

    ``started_utc``: when the run began (`utc_now()` at its start); finished is
    now. ``command``: the command line that ran (None: this process's own).
    ``training``: the training sessions that made the weights (`training_sessions`).
    """
    return {
        **environment(command),
        "started_utc": started_utc,
        "finished_utc": utc_now(),
        "training": training,
    }


# WORKDIR/TRAINING_LOG: one line per training session (a start or a resume) that
# trained steps, with the code and libraries it ran: which code made the weights
# (an evaluation's own provenance is the evaluating code's, often another commit).
TRAINING_LOG = "train_provenance.jsonl"


def data_identity(data_dir) -> dict | None:
    """``{"dir": real path, "shards_sha256": fingerprint or None}`` of the shards a
    session trains on; None without a data dir.

    What evaluate later tells the run's own data by (`thresholds.is_run_data`):
    config.data.dir is often relative to where training ran, and the same build
    can be reached by a symlink, so the text of the path says little. The
    fingerprint is None where the build cannot be read (it is the cheap one of
    metrics.py: names, sizes and the build's metadata; ``fingerprint_version``
    says which version of it, so that a later version can tell it apart)."""
    from ldattn_jax.metrics import FINGERPRINT_VERSION, shards_fingerprint

    if not data_dir:
        return None
    text = os.fspath(data_dir)
    try:
        sha = shards_fingerprint(text)
    except OSError:
        sha = None
    local = "://" not in text  # a gs:// path has no local real path
    return {
        "dir": os.path.realpath(text) if local else text,
        "shards_sha256": sha,
        # Lines logged before it was recorded hold version 1 (metrics.fingerprint_matches).
        "fingerprint_version": FINGERPRINT_VERSION,
        # The side the faces were cut at (`--size` of the build): predict cuts a
        # video's faces so too before resizing them to the model's, as training saw them.
        "crop_size": _crop_size(text),
    }


def _crop_size(data_dir: str) -> int | None:
    from data_prep.shards import read_info

    try:
        return read_info(data_dir)["size"]
    except (OSError, ValueError, KeyError):  # no build, several, an old metadata.json
        return None


def record_training_session(workdir, start_step: int, data_dir=None) -> None:
    """Appends this session's line to WORKDIR/TRAINING_LOG (gs:// too, through etils:
    read and rewritten whole, as GCS objects cannot be appended to). ``data_dir``:
    the shards it trains on, recorded as ``data`` (`data_identity`)."""
    from etils import epath

    path = epath.Path(workdir) / TRAINING_LOG
    line = json.dumps(
        {
            "start_step": int(start_step),
            "started_utc": utc_now(),
            **environment(),
            "data": data_identity(data_dir),
        }
    )
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"  # a line cut short by a crash stays alone, unparseable
    path.write_text(old + line + "\n")


def _session_rows(workdir: str) -> list[dict] | None:
    """The session lines of a local workdir's TRAINING_LOG, in order (a line cut
    short by a crash skipped); None where the run kept no log."""
    path = os.path.join(workdir, TRAINING_LOG)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        return None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # cut short by a crash
        if isinstance(row, dict):
            rows.append(row)
    return rows


def training_sessions(workdir: str, step: int) -> list[dict] | None:
    """The training sessions of a local workdir that contributed to checkpoint
    ``step`` (those that started before it), in order; None where the run kept
    no log (trained before it existed)."""
    rows = _session_rows(workdir)
    if rows is None:
        return None
    return [r for r in rows if isinstance(r.get("start_step"), int) and r["start_step"] < step]


def training_crop_size(workdir: str, step: int) -> int | None:
    """The crop side of the shards that checkpoint ``step`` was last trained on
    (the latest session before it that recorded its data, `data_identity`), or
    None (not recorded: a run trained before it was)."""
    sessions = training_sessions(workdir, step) or []
    sizes = [s["data"].get("crop_size") for s in sessions if isinstance(s.get("data"), dict)]
    return sizes[-1] if sizes and isinstance(sizes[-1], int) else None


def training_data(workdir: str) -> list[dict]:
    """The ``data`` of each training session of a local workdir that recorded one
    (`record_training_session`), in order; [] for a run trained before that was
    recorded, or without a log."""
    return [r["data"] for r in _session_rows(workdir) or () if isinstance(r.get("data"), dict)]
