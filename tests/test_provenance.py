"""What produced a result: file and checkpoint fingerprints, code and library versions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import pytest

from ldattn_jax import provenance


def test_a_files_sha256_is_that_of_all_its_bytes_across_read_chunks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 12345)  # three whole chunks and a part
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    assert provenance.file_sha256(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert provenance.file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def _tree(root, files: dict):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_a_trees_hash_follows_its_files_not_where_it_lies(tmp_path):
    files = {"_METADATA": b"meta", "d/ab12": os.urandom(5000), "d/cd34": b"x" * 10}
    a = provenance.tree_sha256(_tree(tmp_path / "a", files))
    assert provenance.tree_sha256(_tree(tmp_path / "elsewhere" / "b", files)) == a  # a copy
    changed = {**files, "d/cd34": b"x" * 9 + b"y"}  # one byte
    assert provenance.tree_sha256(_tree(tmp_path / "c", changed)) != a
    renamed = {"_METADATA": b"meta", "d/ab12": files["d/ab12"], "d/cd35": b"x" * 10}
    assert provenance.tree_sha256(_tree(tmp_path / "r", renamed)) != a
    # The same bytes cut at another file boundary are another tree.
    moved = {"_METADATA": b"meta", "d/ab12": files["d/ab12"] + b"x", "d/cd34": b"x" * 9}
    assert provenance.tree_sha256(_tree(tmp_path / "m", moved)) != a
    extra = {**files, "d/ef56": b""}  # an empty file counts too
    assert provenance.tree_sha256(_tree(tmp_path / "e", extra)) != a
    with pytest.raises(FileNotFoundError, match="not a directory"):
        provenance.tree_sha256(tmp_path / "nowhere")


def test_package_versions_are_the_installed_ones_and_none_for_a_missing_one():
    got = provenance.package_versions(("jax", "flax", "no-such-package-ldattn"))
    assert got["jax"] == jax.__version__
    assert got["flax"] == __import__("flax").__version__
    assert got["no-such-package-ldattn"] is None
    # Every pinned package that can move a score is installed and named.
    assert None not in provenance.package_versions().values()


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_and_whether_tracked_files_differ_from_it(tmp_path):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    got = provenance.code_version(str(repo))
    assert got["git_commit"] == _git(repo, "rev-parse", "HEAD") and len(got["git_commit"]) == 40
    assert got["git_dirty"] is False
    assert got["ldattn_jax"] == __import__("ldattn_jax").__version__
    (repo / "notes.txt").write_text("scratch")  # untracked: the code is still the commit's
    assert provenance.code_version(str(repo))["git_dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.code_version(str(repo))["git_dirty"] is True
    # Not a checkout (an installed copy): nothing claimed.
    plain = provenance.code_version(str(tmp_path / "site-packages"))
    assert plain["git_commit"] is None and plain["git_dirty"] is None


def test_the_block_names_devices_command_and_times():
    started = provenance.utc_now()
    block = provenance.provenance(started, ["python", "-m", "x", "--a", "b c"])
    assert block["command"] == ["python", "-m", "x", "--a", "b c"]
    assert block["devices"] == {
        "platform": jax.devices()[0].platform,
        "kind": jax.devices()[0].device_kind,
        "count": jax.device_count(),
    }
    assert block["started_utc"] == started <= block["finished_utc"]
    assert block["started_utc"].endswith("+00:00")
    assert block["packages"]["jaxlib"] == __import__("jaxlib").__version__
    # Called as a library (make demo runs evaluate): the process's command line as typed.
    assert provenance.provenance(started)["command"] == sys.orig_argv


def test_a_training_session_records_the_build_it_read(tmp_path):
    from ldattn_jax.metrics import FINGERPRINT_VERSION, shards_fingerprint

    data = tmp_path / "shards"
    data.mkdir()
    (data / "dataset_info.json").write_text("{}")  # a build's TFDS folder, as data_prep's
    meta = {"dataset": "ffpp", "stack": 3, "size": 118, "encoding": "raw"}
    (data / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "link").symlink_to(data)
    run = tmp_path / "run"
    run.mkdir()
    provenance.record_training_session(run, 0, str(tmp_path / "link"))
    provenance.record_training_session(run, 5, str(tmp_path / "gone"))
    provenance.record_training_session(run, 9)
    # The real path and fingerprint (evaluate tells the run's own build by them);
    # a build that cannot be read has no fingerprint; no data dir, no entry.
    version = FINGERPRINT_VERSION  # which fingerprint: versions differ for one build
    assert provenance.training_data(str(run)) == [
        {
            "dir": str(data),
            "shards_sha256": shards_fingerprint(data),
            "fingerprint_version": version,
            "crop_size": 118,  # the build's --size: predict cuts faces so (then resizes)
        },
        {
            "dir": str(tmp_path / "gone"),
            "shards_sha256": None,
            "fingerprint_version": version,
            "crop_size": None,
        },
    ]
    # The crop of the shards a checkpoint was last trained on: step 3 came from the
    # session begun at 0; step 8 from the one begun at 5, which could not read its build.
    assert provenance.training_crop_size(str(run), 3) == 118
    assert provenance.training_crop_size(str(run), 8) is None
    provenance.record_training_session(run, 12, str(data))
    assert provenance.training_crop_size(str(run), 13) == 118
    assert provenance.training_crop_size(str(tmp_path / "none"), 13) is None
    assert [s["data"] for s in provenance.training_sessions(str(run), 10)][2] is None
    assert provenance.training_data(str(tmp_path / "none")) == []
