"""Writing result files so that a reader never sees half of one.

`atomic_write` / `atomic_open` / `fsync_dir` / `TEMP_MARK`: the one way the
tools write a result file (temp file in the same folder, flushed and fsynced,
then ``os.replace``), from `data_prep.atomic_files` (below ldattn_jax, so that
data_prep.build writes its cache the same way), under the names the tools use;
`write`: ``--json OUT`` of the command-line tools (report, compare,
bench_goals, bench_diff): a path that cannot be written is one line naming
it, never a traceback after the work is done. Each tool raises or prints the
text in its own way."""

from __future__ import annotations

import json
import os

from data_prep.atomic_files import TEMP_MARK, atomic_open, atomic_write, fsync_dir

__all__ = ["TEMP_MARK", "atomic_open", "atomic_write", "fsync_dir", "problem", "write"]


def problem(path: str, example: str) -> str | None:
    """Why ``--json path`` cannot be written, or None; checked before the work
    is done, so that a typo in the path does not cost the run."""
    if os.path.isdir(path):
        return f"--json {path} is a directory: name a file, e.g. {os.path.join(path, example)}"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return (
            f"--json {path}: the folder {folder} does not exist; create it or name a file "
            "in an existing folder"
        )
    return None


def write(path: str, data, **dump) -> str | None:
    """Writes ``data`` as indented JSON (`atomic_write`); why it could not, or None.

    Never NaN or Infinity (``allow_nan`` is always False: they are not JSON,
    and most readers refuse the file): a result holding one is not written,
    and the text returned says so."""
    try:
        text = json.dumps(data, **{"indent": 2, **dump, "allow_nan": False}) + "\n"
    except ValueError as e:  # "Out of range float values are not JSON compliant"
        return f"--json {path}: not written: a number in it is NaN or infinite ({e})"
    try:
        atomic_write(path, text)
    except OSError as e:
        return f"--json {path}: cannot write ({e.strerror or e})"
    return None
