"""Writing result files so that a reader never sees half of one.

`atomic_write` / `atomic_open`: the one way the tools write a result file
(temp file in the same folder, flushed and fsynced, then ``os.replace``);
`write`: ``--json OUT`` of the command-line tools (report, compare,
bench_goals, bench_diff): a path that cannot be written is one line naming
it, never a traceback after the work is done. Each tool raises or prints the
text in its own way."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from typing import IO

from data_prep import leftovers


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


TEMP_MARK = ".tmp-"  # in atomic_open's temp file names: ".<name>.tmp-<host>-<pid>-<hex>"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``with atomic_open(path, "w", newline="") as f: ...``: a file object on a
    temp file beside ``path`` (hidden: ``.<name>.tmp-<host>-<pid>-<hex>``, so a
    glob of ``*.csv`` or ``*/metrics.json`` never sees it), which replaces
    ``path`` only when the block ends without an exception, after a flush and
    fsync.

    Any reader of ``path`` sees the old file or the whole new one, never part
    of one; after a crash or a power loss ``path`` is one of the two. An
    exception in the block (or on the way) deletes the temp file and leaves
    ``path`` as it was; a kill -9 leaves only the hidden temp file, which the
    next write of ``path`` from this host deletes (`_remove_dead_temps`). ``mode``:
    "w" or "wb" (``kwargs`` as for ``open``: encoding, newline). The new file
    gets ``path``'s permissions where it exists, else the umask's default; a
    symlink at ``path`` is written through (its target is replaced).

    A path that is not a regular file to be (``/dev/null``, ``/dev/stdout``, a
    FIFO: anything under /dev or /proc, or an existing file that is not a
    regular one) is written in place, as ``open`` would: replaced by a rename,
    ``--json /dev/null`` run as root replaced the device for the whole system.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}; use 'w' or 'wb'")
    if _not_a_plain_file(os.fspath(path)):
        if mode == "w":
            kwargs.setdefault("encoding", "utf-8")
        with open(path, mode, **kwargs) as f:
            yield f
        return
    path = os.path.realpath(os.fspath(path))
    folder, name = os.path.split(path)
    _remove_dead_temps(folder, name)
    tmp = os.path.join(folder, f".{name}{TEMP_MARK}{leftovers.tag()}-{secrets.token_hex(4)}")
    # O_EXCL: never another's file; 0o666 less the umask, as open() would create it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with contextlib.suppress(OSError):  # keep an existing file's permissions
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        if mode == "w":
            kwargs.setdefault("encoding", "utf-8")
        with open(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def _remove_dead_temps(folder: str, name: str) -> None:
    """Deletes the temp files of ``name`` that killed writers of this host left
    (a kill -9 or a power cut between the temp file and the rename): without
    this they piled up beside a result rewritten by every run. A live writer's
    file, this process's (another thread may be writing), or another host's on
    a shared file system is left alone."""
    pattern = re.compile(
        rf"\.{re.escape(name)}{re.escape(TEMP_MARK)}{re.escape(leftovers.HOST)}-(\d+)-[0-9a-f]{{8}}"
    )
    try:
        names = os.listdir(folder)
    except OSError:
        return  # the write will say what is wrong with the folder
    for entry in names:
        m = pattern.fullmatch(entry)
        if m and int(m[1]) != os.getpid() and not leftovers.pid_alive(int(m[1])):
            with contextlib.suppress(OSError):  # another writer removed it first
                os.remove(os.path.join(folder, entry))


def _not_a_plain_file(path: str) -> bool:
    """Whether ``path`` names a device, a stream or a pipe rather than a file."""
    absolute = os.path.abspath(path)
    if absolute.startswith(("/dev/", "/proc/")):  # /dev/stdout -> /proc/self/fd/1 -> a pipe
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)  # follows a symlink
    except FileNotFoundError:
        return False  # a new file
    except OSError:
        return False  # the write will say what is wrong


def atomic_write(path: str | os.PathLike, data: str | bytes, *, encoding: str = "utf-8") -> None:
    """Writes ``data`` (text in ``encoding``, or bytes) to ``path`` atomically and
    durably: temp file in the same folder, flush, fsync, ``os.replace``, then
    the folder is fsynced. Raises OSError where it cannot; ``path`` is then as
    it was. See `atomic_open` for the details."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with atomic_open(path, "wb") as f:
        f.write(data)


def fsync_dir(path: str | os.PathLike) -> None:
    """Puts a folder's entries (a rename, a new file) on disk; a no-op where the
    file system cannot sync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
