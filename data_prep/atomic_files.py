"""Writing a file atomically and durably: the one way data_prep and ldattn_jax
replace a file (cache entries, manifests, markers, metrics, figures).

Why not ``open(path, "w")``:
 - a reader (another process, a training run, ``report``) must see the old file
   or the whole new one, never half of one: the new bytes go to a temp file
   beside ``path`` and take its name with one ``os.replace``;
 - after a power loss or a kernel crash ``path`` must be the old file or the
   whole new one, not a name on a file whose data never reached the disk
   (delayed allocation, ext4/xfs): the temp file is fsynced before the rename,
   the folder after it, so the rename is on disk before whatever is written
   next (a video's "done" marker after its stacks).

Temp names are hidden and say who wrote them: ``.<name>.tmp-<host>-<pid>-<hex>``
(`TEMP_MARK`; `is_temp_name`), so a glob of ``*.npz`` or ``*/metrics.json`` never
sees one, and a writer killed outright (kill -9, power cut) can be told from a
live one: its temp files are deleted by the next write of the same file from
this host, or for a whole folder by `remove_dead_temps` (data_prep.build at the
start of a run). A live writer's, or another host's on a shared file system,
are left alone.

Lower than ldattn_jax on purpose: data_prep never imports ldattn_jax;
``ldattn_jax.json_out`` re-exports these names for its callers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import stat
from collections.abc import Iterator
from typing import IO

from data_prep import leftovers

TEMP_MARK = ".tmp-"  # in atomic_open's temp file names: ".<name>.tmp-<host>-<pid>-<hex>"

_TEMP_TAIL = r"-(\d+)-[0-9a-f]{8}"  # -<pid>-<hex>
_TEMP_NAME = re.compile(rf"\..+{re.escape(TEMP_MARK)}.+{_TEMP_TAIL}")
# This host's: <name> and <pid>.
_OWN_TEMP_NAME = re.compile(rf"\.(.+){re.escape(TEMP_MARK)}{re.escape(leftovers.HOST)}{_TEMP_TAIL}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of `atomic_open`'s temp files (of any host):
    not a file of the folder, whatever its name seems to say."""
    return _TEMP_NAME.fullmatch(name) is not None


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", *, remove_dead: bool = True, **kwargs
) -> Iterator[IO]:
    """``with atomic_open(path, "w", newline="") as f: ...``: a file object on a
    temp file beside ``path`` (hidden: ``.<name>.tmp-<host>-<pid>-<hex>``, so a
    glob of ``*.csv`` or ``*/metrics.json`` never sees it), which replaces
    ``path`` only when the block ends without an exception, after a flush and
    fsync.

    Any reader of ``path`` sees the old file or the whole new one, never part
    of one; after a crash or a power loss ``path`` is one of the two. An
    exception in the block (or on the way) deletes the temp file and leaves
    ``path`` as it was; a kill -9 leaves only the hidden temp file, which the
    next write of ``path`` from this host deletes (`remove_dead_temps`; that
    lists the folder: ``remove_dead=False`` where the caller cleans the whole
    folder itself, as data_prep.build does with its cache of thousands of
    files at the start of a run). ``mode``:
    "w" (utf-8 unless ``encoding`` says otherwise) or "wb" (``kwargs`` as for
    ``open``: encoding, newline). The new file gets ``path``'s permissions where
    it exists, else the umask's default (0o666 less the umask, as ``open``); a
    symlink at ``path`` is written through (its target is replaced).

    A path that is not a regular file to be (``/dev/null``, ``/dev/stdout``, a
    FIFO: anything under /dev or /proc, or an existing file that is not a
    regular one) is written in place, as ``open`` would: replaced by a rename,
    ``--json /dev/null`` run as root replaced the device for the whole system.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}; use 'w' or 'wb'")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    if _not_a_plain_file(os.fspath(path)):
        with open(path, mode, **kwargs) as f:
            yield f
        return
    path = os.path.realpath(os.fspath(path))
    folder, name = os.path.split(path)
    if remove_dead:
        remove_dead_temps(folder, name)
    tmp = os.path.join(folder, f".{name}{TEMP_MARK}{leftovers.tag()}-{secrets.token_hex(4)}")
    # O_EXCL: never another's file; 0o666 less the umask, as open() would create it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with contextlib.suppress(OSError):  # keep an existing file's permissions
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
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


def remove_dead_temps(
    folder: str | os.PathLike, name: str | None = None, *, own: bool = False
) -> list[str]:
    """Deletes the temp files that killed writers of this host left in
    ``folder`` (a kill -9 or a power cut between the temp file and the rename):
    those of the file ``name``, or of every file where ``name`` is None. Without
    this they pile up beside a file rewritten by every run. A live writer's
    file, or another host's on a shared file system, is left alone; so is this
    process's (another thread may be writing), unless ``own``: a caller that
    has written nothing yet (a run's start) knows that such a file is of an
    earlier process that had its pid. Returns the paths deleted."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []  # the write will say what is wrong with the folder
    removed = []
    for entry in names:
        m = _OWN_TEMP_NAME.fullmatch(entry)
        if not m or (name is not None and m[1] != name):
            continue
        pid = int(m[2])
        if leftovers.gone(pid, own=own):
            path = os.path.join(folder, entry)
            with contextlib.suppress(OSError):  # another writer removed it first
                os.remove(path)
                removed.append(path)
    return removed


# renameat2(2)'s flag (Linux 3.15+, glibc 2.28+) and "relative to the cwd".
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a libc without it
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def swap_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Exchanges two existing paths (folders or files) in one atomic step, on the
    same file system: ``b`` then holds what ``a`` held and the other way round.
    A reader of ``b`` sees the old or the new, never neither; after a crash
    each name holds one of the two whole. Replacing a folder with two renames
    (the old aside, the new in) leaves an instant, or after a kill for good,
    where ``b`` is missing. False where the system or file system cannot
    (another OS, an old kernel, some network file systems): nothing moved, and
    the caller falls back to its two renames. Any failure is such a False
    (nothing moved; EPERM from a sandbox's seccomp filter, say): the renames
    meet and report a real error (a missing path) themselves."""
    fa, fb = os.fsencode(os.fspath(a)), os.fsencode(os.fspath(b))
    if b"\0" in fa + fb:  # C would cut the path there and move another file
        raise ValueError(f"swap_paths: a path holds a NUL byte: {a!r}, {b!r}")
    if _RENAMEAT2 is None:
        return False
    return _RENAMEAT2(_AT_FDCWD, fa, _AT_FDCWD, fb, _RENAME_EXCHANGE) == 0


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
