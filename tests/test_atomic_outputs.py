"""json_out.atomic_write / atomic_open (data_prep.atomic_files, under the names the
tools use): a reader sees the old file or the whole new one, never part of one;
json_out.write never writes NaN."""

import json
import os
import stat
import subprocess
import sys

import pytest

from data_prep import atomic_files, leftovers
from ldattn_jax import json_out


class Killed(BaseException):
    """What a kill looks like from inside the block: nothing after it runs."""


def _hidden(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_a_write_that_dies_midway_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("old, whole\n")
    with pytest.raises(Killed), json_out.atomic_open(path, "w", newline="") as f:
        f.write("new, half")
        f.flush()
        assert path.read_text() == "old, whole\n"  # not even a reader meanwhile sees it
        raise Killed
    assert path.read_text() == "old, whole\n" and _hidden(tmp_path) == []
    json_out.atomic_write(path, "new\n")
    json_out.atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert path.read_text() == "new\n" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert _hidden(tmp_path) == []


def test_a_writer_killed_outright_leaves_a_temp_file_the_next_write_deletes(tmp_path):
    # kill -9 between the temp file and the rename: nothing of the writer runs,
    # its hidden temp file stays. The next write of the same file from this host
    # deletes it, but not a live writer's, another host's or another file's.
    path = tmp_path / "metrics.json"
    code = (
        "import os, sys\n"
        "from ldattn_jax import json_out\n"
        "with json_out.atomic_open(sys.argv[1], 'w') as f:\n"
        "    f.write('half'); f.flush()\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE, text=True)
    assert p.wait(timeout=300) == -9, p.stderr.read()[-2000:]
    p.stderr.close()
    dead = _hidden(tmp_path)
    assert len(dead) == 1 and dead[0].startswith(f".metrics.json.tmp-{leftovers.HOST}-"), dead
    kept = [
        f".metrics.json.tmp-{leftovers.HOST}-{os.getppid()}-0123abcd",  # a live writer
        ".metrics.json.tmp-elsewhere-999999999-0123abcd",  # another host, shared disk
        f".scores.csv.tmp-{leftovers.HOST}-{p.pid}-0123abcd",  # another file's
    ]
    for name in kept:
        (tmp_path / name).write_text("x")
    json_out.atomic_write(path, "{}\n")
    assert path.read_text() == "{}\n" and _hidden(tmp_path) == sorted(kept)


def test_json_out_writes_through_data_prep_atomic_files():
    # One implementation: data_prep (which must not import ldattn_jax) and the
    # tools write the same way.
    for name in ("atomic_open", "atomic_write", "fsync_dir", "TEMP_MARK"):
        assert getattr(json_out, name) is getattr(atomic_files, name), name


def test_a_whole_folder_loses_only_dead_writers_temp_files(tmp_path):
    # data_prep.build's start of a run: every file's temp files in the folder,
    # of dead writers of this host only.
    dead = [f".{n}.tmp-{leftovers.HOST}-999999999-0123abcd" for n in ("a.npz", "b.json")]
    kept = [
        f".a.npz.tmp-{leftovers.HOST}-{os.getppid()}-0123abcd",  # a live writer
        ".a.npz.tmp-elsewhere-999999999-0123abcd",  # another host, shared disk
        f".a.npz.tmp-{leftovers.HOST}-999999999-notahex!",  # not a temp file's name
        "a.npz",
    ]
    for name in dead + kept:
        (tmp_path / name).write_text("x")
    # build writes its cache so, not listing a folder of thousands at each write.
    with atomic_files.atomic_open(tmp_path / "a.npz", "wb", remove_dead=False) as f:
        f.write(b"new")
    assert (tmp_path / "a.npz").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == sorted(dead + kept)
    removed = atomic_files.remove_dead_temps(tmp_path)
    assert sorted(removed) == sorted(str(tmp_path / n) for n in dead)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
    assert all(atomic_files.is_temp_name(n) for n in dead + kept[:2])
    assert not any(atomic_files.is_temp_name(n) for n in kept[2:] + [".tmp-k3j2h1.npz"])


def test_two_folders_are_exchanged_in_one_step_or_not_at_all(tmp_path, monkeypatch, exchange_works):
    # How evaluate and data_prep.build swap a new result or build in: renameat2's
    # exchange, so the name never stands empty.
    if not exchange_works:
        pytest.skip("no renameat2 exchange on this system or file system")
    a, b = tmp_path / "new", tmp_path / "result"
    for d, text in ((a, "new"), (b, "old")):
        d.mkdir()
        (d / "metrics.json").write_text(text)
    assert atomic_files.swap_paths(a, b) is True
    assert (b / "metrics.json").read_text() == "new" and (a / "metrics.json").read_text() == "old"
    # Any failure moves nothing and leaves the caller's two renames to meet (and
    # report) a real error: a missing path, a sandbox that forbids renameat2.
    assert atomic_files.swap_paths(tmp_path / "missing", b) is False
    monkeypatch.setattr(atomic_files, "_RENAMEAT2", None)  # another OS: the caller falls back
    assert atomic_files.swap_paths(a, b) is False
    assert (b / "metrics.json").read_text() == "new"
    with pytest.raises(ValueError, match="NUL"):  # C would cut "new\0x" to "new"
        atomic_files.swap_paths(f"{a}\0x", b)


def test_a_run_start_also_clears_temp_files_of_an_earlier_process_with_its_pid(tmp_path):
    # In a container each run may get the same pid; a run's start (nothing of its
    # own written yet) knows such a file is an earlier, dead process's.
    mine = tmp_path / f".a.npz.tmp-{leftovers.tag()}-0123abcd"
    mine.write_text("x")
    assert atomic_files.remove_dead_temps(tmp_path) == []  # maybe another thread's
    assert atomic_files.remove_dead_temps(tmp_path, own=True) == [str(mine)]


def test_a_live_writer_in_another_pid_namespace_keeps_its_temp_file(tmp_path):
    # Containers sharing a host name (--network host, hostNetwork) but not their
    # pids: each took the other's live pids for dead ones and deleted its temp
    # files mid-write. The pid namespace is part of the writer's name.
    import shutil

    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"])
    if not probe or probe.returncode != 0:
        pytest.skip("unshare cannot make a pid namespace here")
    code = (
        "import sys; from data_prep import atomic_files; "
        "print(atomic_files.remove_dead_temps(sys.argv[1]))"
    )
    with json_out.atomic_open(tmp_path / "a.npz", "wb") as f:
        f.write(b"live")
        (temp,) = _hidden(tmp_path)
        other = subprocess.run(
            [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, str(tmp_path)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert other.returncode == 0 and other.stdout.strip() == "[]", other.stderr[-2000:]
        assert _hidden(tmp_path) == [temp]
    assert (tmp_path / "a.npz").read_bytes() == b"live"


def test_the_data_is_on_disk_before_the_name_is(tmp_path, monkeypatch):
    # A crash after the rename must not find the name on an empty file (delayed
    # allocation): an fsync that fails leaves the old file, not an unsynced new one.
    path = tmp_path / "metrics.json"
    path.write_text("{}\n")

    def no_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError, match="No space"):
        json_out.atomic_write(path, '{"new": 1}\n')
    assert path.read_text() == "{}\n" and _hidden(tmp_path) == []


def test_permissions_and_symlinks_are_kept(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("1")
    os.chmod(path, 0o640)
    json_out.atomic_write(path, "2")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    link = tmp_path / "link.json"
    link.symlink_to(path)
    json_out.atomic_write(link, "3")
    assert link.is_symlink() and path.read_text() == "3"


def test_a_pipe_or_device_is_written_in_place_not_replaced(tmp_path):
    # --json /dev/null or /dev/stdout: a rename over it replaced the device (as
    # root, for the whole system) or failed on a pipe. A FIFO stands in here.
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    json_out.atomic_write(fifo, "through the pipe")
    reader.join(timeout=120)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got == ["through the pipe"]
    assert _hidden(tmp_path) == []
    assert atomic_files._not_a_plain_file("/dev/stdout")
    assert atomic_files._not_a_plain_file("/dev/null")
    assert not atomic_files._not_a_plain_file(str(tmp_path / "new.json"))


def test_json_out_write_refuses_nan_rather_than_write_invalid_json(tmp_path):
    path = tmp_path / "out.json"
    said = json_out.write(str(path), {"auc": float("nan")})
    assert said and said.startswith(f"--json {path}: not written") and "NaN" in said
    assert not path.exists()
    # compare passes allow_nan=False itself: no clash with the default.
    assert json_out.write(str(path), {"auc": 0.5}, allow_nan=False) is None
    assert json.loads(path.read_text()) == {"auc": 0.5} and path.read_text().endswith("}\n")
    said = json_out.write(str(tmp_path / "no" / "x.json"), {})
    assert said.startswith(f"--json {tmp_path / 'no' / 'x.json'}: cannot write")
    said = json_out.write(str(tmp_path), {})  # a directory
    assert said.startswith(f"--json {tmp_path}: cannot write") and _hidden(tmp_path) == []
