"""``--json OUT`` of the command-line tools (report, compare, bench_goals,
bench_diff): a path that cannot be written is one line naming it, never a
traceback after the work is done. Each tool raises or prints the text in
its own way."""

from __future__ import annotations

import json
import os


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
    """Writes ``data`` as indented JSON; why it could not, or None."""
    try:
        with open(path, "w") as f:
            json.dump(data, f, indent=2, **dump)
            f.write("\n")
    except OSError as e:
        return f"--json {path}: cannot write ({e.strerror or e})"
    return None
