"""Who left a temporary folder: the names a run gives what it writes before a
rename (``...-<host>-<pid>``), and whether that run still runs.

data_prep.build's shard staging and evaluate's result swap both clean up what
killed runs left, and only those: a folder of a live process, or of another
host on a shared file system, is someone's work in progress.
"""

from __future__ import annotations

import os
import re
import socket


def _pid_namespace() -> str:
    """``_pidns<inode>`` of this process's pid namespace, or "" where there is none
    to read. Containers may share a host name (``--network host``, a pod's
    ``hostNetwork``) but not their pids: without it one would take the other's
    live pids for dead ones and delete its work in progress."""
    try:
        return f"_pidns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


# Where a pid means a process, as it goes in file names: the host name, and
# the pid namespace within it.
HOST = (re.sub(r"[^A-Za-z0-9.-]+", "_", socket.gethostname()) or "host") + _pid_namespace()


def tag() -> str:
    """``<host>-<pid>`` of this process, for a temporary name."""
    return f"{HOST}-{os.getpid()}"


def gone(pid: int, *, own: bool) -> bool:
    """Whether the process of this host that left a name with ``pid`` has ended.
    This process's own pid counts as ended only with ``own``: for a caller that
    is writing nothing of that kind now (a run's start), such a name is an
    earlier process's that had the same pid (common in containers)."""
    return own if pid == os.getpid() else not pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host (and pid namespace: `HOST`) still
    runs (assumed so where it cannot be probed harmlessly)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process of another user
        return True
    return True
