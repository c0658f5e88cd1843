"""predict's journal: every video's result on disk as soon as it is known.

``OUT/predictions.jsonl`` gets one line per scored video, flushed at once, so
a run over thousands of videos that dies (killed, out of memory, a power cut)
loses at most the video in hand. A later run into the same OUT reuses a line
when nothing that made it has changed: the same file (absolute path, size,
modification time, and then its bytes: the line's ``sha256``) scored by the
same checkpoint of the same run (step, config hash and the checkpoint's
state files), in the same compute dtype, with the same number of key frames
and faces mode, by the same face finder and model code (their versions:
another finder may crop another face, other model code may give the same
weights other outputs). Anything else is scored again. The file only grows (append-only, like a
log): lines of other settings stay for the runs that made them.

Only scored videos are journaled: an error row costs little to redo, and it
may not recur (a file still being copied, a full disk).
"""

from __future__ import annotations

import hashlib
import json
import os

from ldattn_jax.provenance import file_sha256

JOURNAL = "predictions.jsonl"


def run_key(**settings) -> str:
    """What makes a score reusable, as a short hash (the settings are listed in the line)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_stamp(path: str) -> list:
    """[absolute path, bytes, mtime ns]: a file replaced in place gets a new stamp."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class Journal:
    """Append-only per-video results of `predict` in ``out_dir/predictions.jsonl``."""

    def __init__(self, out_dir: str, key: str, *, reuse: bool = True):
        self.path = os.path.join(out_dir, JOURNAL)
        self.key = key
        self._earlier = self._read() if reuse else {}
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- closed in close()
        if self._file.tell() > 0 and not self._ends_with_newline():
            self._file.write("\n")  # a run died mid-line: keep that line unparseable alone

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _read(self) -> dict[tuple, dict]:
        earlier: dict[tuple, dict] = {}
        if not os.path.exists(self.path):
            return earlier
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed run was writing
                if isinstance(row, dict) and row.get("key") == self.key:
                    earlier[tuple(row["stamp"])] = row["entry"]  # the latest wins
        return earlier

    def earlier(self, video: str) -> dict | None:
        """This video's result from an earlier run with the same settings, or None.

        The stamp finds the line; the bytes must match too (a file rewritten in
        place with its size and modification time kept, as `cp -p` or `rsync`
        of another file can leave it, is scored again). Hashing runs at ~1.3 GB/s
        (2-vCPU Xeon VM), against seconds to decode and detect one video.
        """
        if not self._earlier:
            return None
        try:
            entry = self._earlier.get(tuple(file_stamp(video)))
            if entry is None or entry.get("sha256") != file_sha256(video):
                return None
        except OSError:
            return None
        return dict(entry)

    def record(self, video: str, entry: dict, settings: dict) -> None:
        """Appends one scored video's result; on disk when this returns."""
        try:
            stamp = file_stamp(video)
        except OSError:
            return  # gone since it was read: nothing a later run could match
        row = {"key": self.key, "settings": settings, "stamp": stamp, "entry": entry}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
