"""launch/*: --dry-run prints the commands that would run, with the train command in them;
the SLURM script, run under bash with a fake srun and python, passes every argument
intact and forwards a TERM of the batch shell to training; local.sh keeps the caller's
directory; tpu_pod.sh's archive holds only what git sees, and its install script, run
with a fake apt and Pythons, finds or installs a Python >= 3.11 and replaces the
code on a reused worker; tpu_pod.sh, run with a fake gcloud, recreates a preempted
spot slice and waits for one not yet READY; the image defaults by TPU type; every
launcher takes its flags with - or _ (and tpu_pod.sh also as --flag=value)."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _outside_slurm():
    """os.environ without SLURM's variables (the tests may run inside a SLURM job)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def _dry(script, *args, env=None):
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "launch", script), *args],
        capture_output=True,
        text=True,
        env={**_outside_slurm(), "PATH": "/usr/bin:/bin", **(env or {})},  # no gcloud/srun
        timeout=60,
    )
    return proc


def _commands(out):
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def _argv(cmd):
    """A printed command's arguments as bash reads it when pasted (it has $'...' quoting)."""
    proc = subprocess.run(
        ["bash", "-c", 'printf "%s\\0" ' + cmd], capture_output=True, text=True, check=True
    )
    return proc.stdout.split("\0")[:-1]


# The override docs/training.md shows, and a workdir with a space: both must reach
# python as single, unchanged arguments.
MESH = "--config.mesh=[('data', -1), ('fsdp', 4)]"
SPACED = "/shared/runs/ffpp c23"


def test_local_dry_run_prints_the_train_command():
    p = _dry("local.sh", "--dry-run", "configs/demo.py", "/tmp/wd", "--config.total_steps=3")
    assert p.returncode == 0, p.stderr
    (cmd,) = _commands(p.stdout)
    argv = shlex.split(cmd)
    # This checkout's code whatever the directory (no cd: see the next test).
    assert argv[:2] == ["env", f"PYTHONPATH={ROOT}"]
    assert argv[3:] == [
        "-m",
        "ldattn_jax.train",
        "--config",
        "configs/demo.py",
        "--workdir",
        "/tmp/wd",
        "--config.total_steps=3",
    ]


def test_tpu_pod_dry_run_creates_installs_and_trains_on_all_workers(tmp_path):
    p = _dry(
        "tpu_pod.sh",
        "--dry-run",
        "--name",
        "lda",
        "--zone",
        "us-central2-b",
        "--type",
        "v4-32",
        "--config",
        "configs/ffpp.py",
        "--workdir",
        "gs://bucket/runs/ffpp",
        "--config.batch_size=256",
        env={"TMPDIR": str(tmp_path)},  # the file list a dry run keeps
    )
    assert p.returncode == 0, p.stderr
    cmds = _commands(p.stdout)
    assert cmds[0].startswith("gcloud compute tpus tpu-vm create lda --zone us-central2-b")
    assert "--accelerator-type v4-32" in cmds[0]
    ssh = [_argv(c) for c in cmds if c.startswith("gcloud compute tpus tpu-vm ssh lda")]
    assert len(ssh) == 2 and all("--worker=all" in c for c in ssh)
    remote = [c[c.index("--command") + 1] for c in ssh]
    assert "pip install" in remote[0] and "jax[tpu]==0.10.2" in remote[0]
    # The gs:// workdir needs gcsfs: the project's pinned extra, not whatever is newest.
    assert '.venv/bin/pip install -q -e ".[gcs]"' in remote[0] and "gcsfs" not in remote[0]
    # What each worker's shell runs: cd, then python with the arguments as given.
    train = shlex.split(remote[1])
    assert train[:3] == ["cd", "~/ldattn_jax", "&&"]
    assert train[4:] == [
        *("-m", "ldattn_jax.train", "--config", "configs/ffpp.py"),
        *("--workdir", "gs://bucket/runs/ffpp", "--config.batch_size=256"),
    ]


def test_tpu_pod_quotes_config_workdir_and_overrides_for_the_remote_shell(tmp_path):
    p = _dry(
        "tpu_pod.sh",
        "--dry-run",
        *("--name", "lda", "--zone", "z", "--type", "v4-8"),
        *("--config", "configs/my ffpp.py", "--workdir", "gs://bucket/runs/a b"),
        MESH,
        env={"TMPDIR": str(tmp_path)},
    )
    assert p.returncode == 0, p.stderr
    ssh = _argv(_commands(p.stdout)[-1])
    train = shlex.split(ssh[ssh.index("--command") + 1])
    expected = ["--config", "configs/my ffpp.py", "--workdir", "gs://bucket/runs/a b", MESH]
    assert train[-5:] == expected


def test_the_gcs_extra_pins_gcsfs_and_the_fsspec_it_runs_on():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    pins = dict(req.split("==") for req in extras["gcs"])
    assert set(pins) == {"gcsfs", "fsspec"} and all(pins.values())


def test_tpu_pod_refuses_a_local_workdir():
    p = _dry(
        "tpu_pod.sh",
        "--dry-run",
        *("--name", "lda", "--zone", "z", "--type", "v4-8"),
        *("--config", "configs/ffpp.py", "--workdir", "/tmp/wd"),
    )
    assert p.returncode == 2 and "gs://" in p.stderr


def test_gpu_slurm_dry_run_runs_one_process_per_task_with_a_coordinator():
    env = {"SLURM_NTASKS": "16", "SLURM_JOB_NODELIST": "gpu7,gpu8", "SLURM_JOB_ID": "40123"}
    p = _dry("gpu_slurm.sbatch", "--dry-run", "configs/ffpp.py", "/shared/runs/ffpp", env=env)
    assert p.returncode == 0, p.stderr
    (cmd,) = _commands(p.stdout)
    argv = shlex.split(cmd)
    assert argv[0] == "srun"
    assert "--cpus-per-task=8" in argv  # not inherited by srun of Slurm 22.05-23.11
    # The port is the job's own (12000 + 40123 % 20000), not one every job races for.
    assert "--export=ALL,JAX_COORDINATOR_ADDRESS=gpu7:12123,JAX_NUM_PROCESSES=16" in argv
    assert 'JAX_PROCESS_ID="$SLURM_PROCID"' in argv[argv.index("-c") + 1]
    assert argv[-6:] == [
        *("-m", "ldattn_jax.train", "--config", "configs/ffpp.py"),
        *("--workdir", "/shared/runs/ffpp"),
    ]


# A fake srun (runs the command as task 0 with srun's --export variables and, like
# srun, forwards TERM to it) and a fake python that reports what it received.
FAKE_SRUN = r"""#!/usr/bin/env bash
while [[ "$1" == --* ]]; do
  if [[ "$1" == --export=* ]]; then
    IFS=, read -ra kv <<< "${1#--export=}"
    for x in "${kv[@]}"; do if [[ "$x" == *=* ]]; then export "$x"; fi; done
  fi
  shift
done
export SLURM_PROCID=0
# The trap before the task starts (as in gpu_slurm.sbatch): a TERM arriving
# between the fork and the trap would kill this fake srun and test nothing.
task=""
signalled=0
forward() { signalled=1; if [[ -n "$task" ]]; then kill -TERM "$task"; fi; }
trap forward TERM
"$@" &
task=$!
if [[ "$signalled" == 1 ]]; then forward; fi
wait "$task"; status=$?
while kill -0 "$task" 2>/dev/null; do wait "$task"; status=$?; done
exit "$status"
"""
FAKE_PYTHON = r"""
import json, os, signal, sys, time
out = os.environ["FAKE_OUT"]
keys = ("JAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")
env = {k: os.environ.get(k) for k in keys}
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append("TERM"))
with open(out + ".tmp", "w") as f:
    json.dump({"argv": sys.argv[1:], "env": env}, f)
os.rename(out + ".tmp", out)  # the test starts signalling once this exists
deadline = time.time() + float(os.environ.get("FAKE_WAIT", "0"))
while not got and time.time() < deadline:
    time.sleep(0.02)
with open(out + ".signals", "w") as f:
    json.dump(got, f)
sys.exit(0 if got or not os.environ.get("FAKE_WAIT") else 3)
"""


def _slurm(tmp_path, *args, wait=0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "python").write_text(f"#!{sys.executable}\n{FAKE_PYTHON}")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = tmp_path / "received.json"
    env = {
        **_outside_slurm(),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHON": str(bin_dir / "python"),
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NODELIST": "gpu7",
        "FAKE_OUT": str(out),
        **({"FAKE_WAIT": str(wait)} if wait else {}),
    }
    script = os.path.join(ROOT, "launch", "gpu_slurm.sbatch")
    proc = subprocess.Popen(
        ["bash", script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, out


def test_gpu_slurm_passes_every_argument_intact(tmp_path):
    proc, out = _slurm(tmp_path, "configs/ffpp.py", SPACED, MESH, "--config.data.dir=/d/x y")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    got = json.loads(out.read_text())
    assert got["argv"] == [
        *("-m", "ldattn_jax.train", "--config", "configs/ffpp.py", "--workdir", SPACED),
        *(MESH, "--config.data.dir=/d/x y"),
    ]
    assert got["env"] == {
        "JAX_PROCESS_ID": "0",
        "JAX_COORDINATOR_ADDRESS": "gpu7:12000",  # no SLURM_JOB_ID: 12000 + 0
        "JAX_NUM_PROCESSES": "1",
    }
    # The printed command, pasted into a shell, is the same command.
    (cmd,) = _commands(stdout)
    assert shlex.split(cmd)[-8:] == got["argv"]


def test_gpu_slurm_forwards_a_term_of_the_batch_shell_to_training(tmp_path):
    # SLURM's notice (or scancel, preemption) may reach only the batch shell;
    # training must get it to save, and the job must wait for that and exit 0.
    # wait: how long the fake training waits for the TERM (it ends when it comes).
    proc, out = _slurm(tmp_path, "configs/ffpp.py", "/shared/runs/ffpp", wait=120)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert out.exists(), proc.stderr.read() if proc.poll() is not None else "no start"
    os.kill(proc.pid, signal.SIGTERM)  # the batch shell only, as --signal=B:TERM does
    proc.communicate(timeout=180)
    assert json.loads((tmp_path / "received.json.signals").read_text()) == ["TERM"]
    assert proc.returncode == 0


def test_gpu_slurm_signals_the_job_steps_not_only_the_batch_shell():
    with open(os.path.join(ROOT, "launch", "gpu_slurm.sbatch")) as f:
        directives = [line.split()[1] for line in f if line.startswith("#SBATCH --signal")]
    # "B:" would signal only the batch shell; without it SLURM signals the step's tasks.
    assert directives == ["--signal=TERM@120"]


@pytest.mark.parametrize("script", ["local.sh", "gpu_slurm.sbatch"])
def test_missing_arguments_print_usage(script):
    p = _dry(script, "--dry-run")
    assert p.returncode == 2 and "usage" in p.stderr


# ---- local.sh: relative paths are the caller's


def test_local_keeps_the_callers_directory_for_relative_paths(tmp_path):
    # A cd into the checkout made `launch/local.sh cfg.py runs/x` from another
    # directory read the checkout's cfg.py and write the checkout's runs/x.
    fake = tmp_path / "python"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "json.dump({'cwd': os.getcwd(), 'argv': sys.argv[1:],"
        " 'path': os.environ['PYTHONPATH']}, open(os.environ['FAKE_OUT'], 'w'))\n"
    )
    fake.chmod(0o755)
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    out = tmp_path / "got.json"
    env = {**os.environ, "PYTHON": str(fake), "FAKE_OUT": str(out), "PYTHONPATH": "/x"}
    script = os.path.join(ROOT, "launch", "local.sh")
    p = subprocess.run(
        ["bash", script, "my.py", "runs/x", "--config.data.dir=shards"],
        cwd=caller,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    got = json.loads(out.read_text())
    assert got["cwd"] == str(caller)
    assert got["argv"] == [
        *("-m", "ldattn_jax.train", "--config", "my.py"),
        *("--workdir", "runs/x", "--config.data.dir=shards"),
    ]
    assert got["path"] == f"{ROOT}:/x"  # this checkout's code first, the caller's path kept


def test_local_runs_this_checkouts_train_from_another_directory(tmp_path):
    # The real venv python, from a directory without the package: the module is
    # found, and the config is read relative to that directory (a bad step count
    # then stops it before anything is written).
    shutil.copytree(os.path.join(ROOT, "configs"), tmp_path / "mine")
    p = subprocess.run(
        ["bash", os.path.join(ROOT, "launch", "local.sh"), "mine/demo.py", "wd"]
        + ["--config.log_every=0"],
        cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "config.log_every=0 is out of range" in out, out[-3000:]
    assert not (tmp_path / "wd").exists() and not os.path.exists(os.path.join(ROOT, "wd"))


# ---- gpu_slurm.sbatch: GPUs, the default PYTHON, the coordinator port


def test_gpu_slurm_lets_every_task_see_its_nodes_gpus():
    # jax.distributed picks GPU ordinal SLURM_LOCALID: with one GPU bound per task
    # (seen as ordinal 0) tasks 1..7 of a node would ask for ordinals they lack.
    with open(os.path.join(ROOT, "launch", "gpu_slurm.sbatch")) as f:
        sbatch = dict(
            line.split()[1].partition("=")[::2] for line in f if line.startswith("#SBATCH --")
        )
    assert not any(k.startswith("--gpus-per-task") or k == "--gpu-bind" for k in sbatch)
    assert sbatch["--gpus-per-node"] == sbatch["--ntasks-per-node"] == "8"


def test_gpu_slurm_refuses_more_tasks_than_gpus_on_a_node():
    env = {"SLURM_NTASKS_PER_NODE": "8", "SLURM_GPUS_ON_NODE": "4"}
    p = _dry("gpu_slurm.sbatch", "--dry-run", "c.py", "/w", env=env)
    assert p.returncode == 2 and "--gpus-per-node=N --ntasks-per-node=N" in p.stderr
    env["SLURM_GPUS_ON_NODE"] = "8"
    assert _dry("gpu_slurm.sbatch", "--dry-run", "c.py", "/w", env=env).returncode == 0


def test_gpu_slurm_coordinator_port_overrides_and_must_be_a_port():
    env = {"SLURM_JOB_ID": "7", "COORDINATOR_PORT": "23456"}
    p = _dry("gpu_slurm.sbatch", "--dry-run", "c.py", "/w", env=env)
    (export,) = [a for a in shlex.split(_commands(p.stdout)[0]) if a.startswith("--export=")]
    assert "JAX_COORDINATOR_ADDRESS=localhost:23456," in export
    p = _dry("gpu_slurm.sbatch", "--dry-run", "c.py", "/w", env={"COORDINATOR_PORT": "12x"})
    assert p.returncode == 2 and "COORDINATOR_PORT=12x" in p.stderr


def test_gpu_slurm_finds_the_checkout_under_sbatch_or_says_how(tmp_path):
    # sbatch runs a copy of the script from slurmd's spool directory: the checkout
    # is then the submit directory, if the job was submitted from there.
    spool = tmp_path / "spool"
    spool.mkdir()
    script = spool / "slurm_script"
    shutil.copy(os.path.join(ROOT, "launch", "gpu_slurm.sbatch"), script)
    env = {k: v for k, v in _outside_slurm().items() if k != "PYTHON"}

    def submit(submit_dir, **extra):
        return subprocess.run(
            ["bash", str(script), "--dry-run", "c.py", "/w"],
            env={**env, "PATH": "/usr/bin:/bin", "SLURM_SUBMIT_DIR": submit_dir, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    p = submit(ROOT)
    assert p.returncode == 0, p.stderr
    assert f"{ROOT}/.venv/bin/python -m ldattn_jax.train" in p.stdout
    p = submit(str(tmp_path))
    assert p.returncode == 2 and p.stdout == ""
    assert str(tmp_path) in p.stderr and "Submit from the checkout" in p.stderr
    assert "PYTHON=" in p.stderr
    p = submit(str(tmp_path), PYTHON="/opt/env/bin/python")
    assert p.returncode == 0 and "/opt/env/bin/python -m ldattn_jax.train" in p.stdout


# ---- tpu_pod.sh: what is copied, and the install on each worker


# describe: the slice's state from FAKE_STATES, one line per call (the last line
# stays); an empty line or no file: no such slice (NOT_FOUND, as gcloud says it);
# NETWORK_ERROR: describe fails otherwise. Like gcloud, it prints the bare state
# only when asked for --format='value(state)', else YAML.
FAKE_GCLOUD = r"""#!/usr/bin/env bash
echo "${*//$'\n'/ }" >> "$FAKE_LOG"  # one line per call
if [[ "$4" == describe ]]; then
  state=""
  if [[ -f "$FAKE_STATES" ]]; then
    state="$(head -n 1 "$FAKE_STATES")"
    if [[ $(wc -l < "$FAKE_STATES") -gt 1 ]]; then sed -i 1d "$FAKE_STATES"; fi
  fi
  if [[ -z "$state" ]]; then
    echo "ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource 'lda' was not found" >&2
    exit 1
  fi
  if [[ "$state" == NETWORK_ERROR ]]; then
    echo "ERROR: (gcloud.compute.tpus.tpu-vm.describe) There was a problem refreshing your auth" >&2
    exit 1
  fi
  if [[ "$*" == *"--format=value(state)"* ]]; then echo "$state"; else echo "state: $state"; fi
  exit 0
fi
if [[ "$4" == scp ]]; then cp "$5" "$FAKE_ARCHIVE"; fi
exit 0
"""
POD_ARGS = ("--name", "lda", "--zone", "z", "--type", "v4-8", "--config", "c.py")


def _run_pod(checkout, tmp_path, *extra, states=(), env=None):
    """Runs checkout/launch/tpu_pod.sh (no --dry-run) with a fake gcloud whose slice
    goes through `states` (none: no slice); the process and the gcloud calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"
    if states:
        (tmp_path / "states").write_text("".join(f"{s}\n" for s in states))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_LOG": str(log),
        "FAKE_STATES": str(tmp_path / "states"),
        "FAKE_ARCHIVE": str(tmp_path / "sent.tar.gz"),
        "TMPDIR": str(tmp_path),
        "GIT_CEILING_DIRECTORIES": str(tmp_path),  # no repository above the test's
        **(env or {}),
    }
    p = subprocess.run(
        ["bash", str(checkout / "launch" / "tpu_pod.sh"), *POD_ARGS, "--workdir", "gs://b/r"]
        + list(extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p, log.read_text().splitlines() if log.exists() else []


def _pod(checkout, tmp_path):
    """Runs checkout/launch/tpu_pod.sh with a fake gcloud and no slice; the archive."""
    p, _ = _run_pod(checkout, tmp_path)
    assert p.returncode == 0, p.stderr
    with tarfile.open(tmp_path / "sent.tar.gz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
    return names, p


def _checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "launch", "tpu_pod.sh"), repo / "launch")
    for name in ("kept.py", "gone.py", "new.py", "demo_out/big.bin", ".venv/bin/python"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    (repo / ".gitignore").write_text("/demo_out/\n.venv/\n")
    return repo


def test_tpu_pod_copies_only_what_git_sees(tmp_path):
    repo = _checkout(tmp_path)
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", ".gitignore", "launch", "kept.py", "gone.py"], check=True)
    (repo / "gone.py").unlink()  # tracked, deleted: no longer part of the checkout
    names, p = _pod(repo, tmp_path)
    # Tracked and untracked-not-ignored files; no ignored output, no .git.
    assert names == {".gitignore", "launch/tpu_pod.sh", "kept.py", "new.py"}
    assert "4 files" in p.stdout
    # The stage (file list, archive) goes once the files are sent.
    assert not [f for f in os.listdir(tmp_path) if f.startswith("ldattn_jax_src.")]


def test_tpu_pod_outside_git_copies_all_but_venv_and_git(tmp_path):
    repo = _checkout(tmp_path)
    (repo / ".git").mkdir()  # not a repository: git rejects it, as any non-checkout
    (repo / ".git" / "HEAD").write_text("junk")
    names, _ = _pod(repo, tmp_path)
    assert {"kept.py", "gone.py", "new.py", "demo_out/big.bin", "launch/tpu_pod.sh"} <= names
    assert not [n for n in names if n.split("/")[0] in (".venv", ".git")]


def test_tpu_pod_tells_how_to_stop_and_resume_after_the_session(tmp_path):
    p = _dry(
        "tpu_pod.sh",
        "--dry-run",
        *("--name", "lda", "--zone", "z", "--type", "v4-8"),
        *("--config", "c.py", "--workdir", "gs://b/r"),
        env={"TMPDIR": str(tmp_path)},
    )
    assert "keep it open until the\nrun ends" in p.stderr and "SIGHUP" in p.stderr
    assert "rerun this same command" in p.stderr and "gs://b/r" in p.stderr
    (stop,) = [line.strip() for line in p.stderr.splitlines() if "pkill" in line]
    argv = _argv(stop)
    assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    assert argv[5:9] == ["lda", "--worker=all", "--zone", "z"]
    assert argv[-1] == 'pkill -HUP -f "[l]dattn_jax[.]train" || true'
    # The pattern finds the training processes, not the shell that runs pkill.
    assert re.search("[l]dattn_jax[.]train", ".venv/bin/python -m ldattn_jax.train --config c")
    assert not re.search("[l]dattn_jax[.]train", argv[-1])


# A worker without a Python >= 3.11: only the tools the install uses are on PATH,
# apt-get and sudo are fakes, and a "Python" is this interpreter behind a script
# that reports a version and makes a venv whose pip only logs what it installs.
FAKE_PY = r"""#!/bin/sh
if [ "$1" = -V ]; then echo "Python @VERSION@"; exit 0; fi
if [ "$1" = -c ]; then
  if [ "@VERSION@" = 3.10.12 ]; then exit 1; fi
  exec @REAL@ "$@"
fi
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\necho "pip $*" >> "$FAKE_LOG"\n' > "$3/bin/pip"
  chmod +x "$3/bin/pip"
  ln -sf "$0" "$3/bin/python"
  echo "venv by $0" >> "$FAKE_LOG"
  exit 0
fi
exit 3
"""
FAKE_APT = r"""#!/bin/sh
echo "apt-get $*" >> "$FAKE_LOG"
if [ "$1" = install ] && [ -n "$APT_GIVES" ]; then cp "$APT_GIVES" "$FAKE_BIN/python3.11"; fi
exit 0
"""


def _worker(tmp_path, pythons, pod_args=(), apt_gives=None):
    """Runs the printed install script as a worker's shell would; (status, stderr, log)."""
    p = _dry(
        "tpu_pod.sh",
        "--dry-run",
        *("--name", "lda", "--zone", "z", "--type", "v4-8"),
        *("--config", "c.py", "--workdir", "gs://b/r", *pod_args),
        env={"TMPDIR": str(tmp_path)},
    )
    ssh = [_argv(c) for c in _commands(p.stdout) if " tpu-vm ssh " in c]
    install = ssh[0][ssh[0].index("--command") + 1]
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir(exist_ok=True)
    tools = ("tar", "gzip", "mkdir", "hostname", "basename", "rm", "chmod", "ln", "cp", "mv")
    for tool in (*tools, "grep"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, version in {**pythons, "apt-python3.11": "3.11.13"}.items():
        script = FAKE_PY.replace("@VERSION@", version).replace("@REAL@", sys.executable)
        (versions / name).write_text(script)
        (versions / name).chmod(0o755)
        if name in pythons:
            os.symlink(versions / name, bin_dir / name)
    (bin_dir / "apt-get").write_text(FAKE_APT)
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for f in ("apt-get", "sudo"):
        (bin_dir / f).chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text("")
    with tarfile.open(home / "ldattn_jax_src.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=".")
    log = tmp_path / "log"
    log.write_text("")
    env = {
        "PATH": str(bin_dir),
        "HOME": str(home),
        "FAKE_LOG": str(log),
        "FAKE_BIN": str(bin_dir),
        "APT_GIVES": str(versions / "apt-python3.11") if apt_gives else "",
    }
    w = subprocess.run(["/bin/sh", "-c", install], env=env, capture_output=True, text=True)
    return w.returncode, w.stderr, log.read_text().splitlines()


def test_install_on_a_python310_image_installs_python311_with_apt(tmp_path):
    status, err, log = _worker(tmp_path, {"python3": "3.10.12"}, apt_gives=True)
    assert status == 0, err
    assert log[:2] == ["apt-get update -q", "apt-get install -y -q python3.11 python3.11-venv"]
    assert log[2] == f"venv by {tmp_path}/bin/python3.11"  # the venv is 3.11's
    assert log[3:] == ["pip install -q -e .[gcs]", "pip install -q jax[tpu]==0.10.2"]
    assert (tmp_path / "home" / "ldattn_jax" / "pyproject.toml").exists()


def test_install_uses_a_python312_that_is_there_and_remakes_an_old_venv(tmp_path):
    old = tmp_path / "home" / "ldattn_jax" / ".venv"
    old.mkdir(parents=True)
    (old / "stale").write_text("left by a 3.10 venv")
    status, err, log = _worker(tmp_path, {"python3": "3.10.12", "python3.12": "3.12.3"})
    assert status == 0, err
    assert not any(line.startswith("apt-get") for line in log)
    assert log[0] == f"venv by {tmp_path}/bin/python3.12"
    assert not (old / "stale").exists()


def test_install_stops_with_a_clear_message_without_python311(tmp_path):
    # apt gave nothing (another distribution, no network): stop before pip.
    status, err, log = _worker(tmp_path, {"python3": "3.10.12"}, apt_gives=False)
    assert status == 1 and "needs Python >= 3.11" in err and "--python PATH" in err
    assert not any(line.startswith(("pip", "venv")) for line in log)


def test_install_takes_the_python_given_and_checks_it(tmp_path):
    pythons = {"python3.11": "3.11.13", "py310": "3.10.12"}
    status, err, log = _worker(tmp_path, pythons, pod_args=("--python", "py310"))
    assert status == 1 and "py310" in err and "Python 3.10.12" in err
    assert not any(line.startswith(("apt-get", "pip")) for line in log)


def test_install_removes_what_the_checkout_deleted_and_nothing_else(tmp_path):
    # Extracted over the last run's ~/ldattn_jax, a file deleted from the checkout
    # stayed on the workers (and could be imported). Only what the last run
    # shipped may go: shards, outputs and the venv kept there are users'.
    code = tmp_path / "home" / "ldattn_jax"
    (code / "ldattn_jax").mkdir(parents=True)
    (code / "ldattn_jax" / "gone.py").write_text("deleted from the checkout since")
    (code / "data").mkdir()
    (code / "data" / "train.array_record-00000").write_text("shards built on the worker")
    (code / ".shipped").write_text("./\n./pyproject.toml\n./ldattn_jax/gone.py\n")
    (code / ".venv" / "bin").mkdir(parents=True)
    (code / ".venv" / "kept").write_text("installed packages")
    # A 3.12 venv (its python is the worker's python3.12, which _worker makes).
    os.symlink(tmp_path / "versions" / "python3.12", code / ".venv" / "bin" / "python")
    status, err, log = _worker(tmp_path, {"python3": "3.10.12", "python3.12": "3.12.3"})
    assert status == 0, err
    assert not (code / "ldattn_jax" / "gone.py").exists()
    assert (code / "pyproject.toml").exists()
    assert (code / "data" / "train.array_record-00000").read_text() == "shards built on the worker"
    assert (code / ".venv" / "kept").read_text() == "installed packages"
    # This run's list, for the next: what the archive holds.
    assert "./pyproject.toml" in (code / ".shipped").read_text().splitlines()
    assert "./ldattn_jax/gone.py" not in (code / ".shipped").read_text()
    assert log[-2:] == ["pip install -q -e .[gcs]", "pip install -q jax[tpu]==0.10.2"]


# ---- tpu_pod.sh: the slice's state on a rerun


def _calls(log):
    """The gcloud subcommands called, e.g. ["describe", "delete", "create", "scp"]."""
    return [line.split()[3] for line in log]


@pytest.mark.parametrize("state", ["PREEMPTED", "TERMINATED"])
def test_tpu_pod_rerun_recreates_a_preempted_spot_slice(tmp_path, state):
    # A preempted spot slice is still listed, so describe succeeds: reusing it sent
    # scp and ssh to a slice that runs nothing, and the promised resume failed.
    p, log = _run_pod(_checkout(tmp_path), tmp_path, "--spot", states=[state])
    assert p.returncode == 0, p.stderr
    assert _calls(log) == ["describe", "delete", "create", "scp", "ssh", "ssh"]
    assert "--format=value(state)" in log[0]
    assert log[1] == "compute tpus tpu-vm delete lda --zone z --quiet"
    assert log[2].endswith("--accelerator-type v4-8 --version tpu-ubuntu2204-base --spot")


def test_tpu_pod_stops_on_a_preempted_slice_without_spot_and_names_the_delete(tmp_path):
    p, log = _run_pod(_checkout(tmp_path), tmp_path, states=["PREEMPTED"])
    assert p.returncode == 1
    assert _calls(log) == ["describe"]  # nothing deleted, nothing sent
    (line,) = p.stderr.splitlines()
    assert "PREEMPTED" in line
    delete = line[line.index("gcloud compute tpus tpu-vm delete") :]
    assert _argv(delete) == shlex.split("gcloud compute tpus tpu-vm delete lda --zone z --quiet")


@pytest.mark.parametrize(
    "states, calls",
    [
        (["CREATING", "STARTING", "READY"], ["describe"] * 3),
        (["DELETING", ""], ["describe", "describe", "create"]),  # gone, then made anew
    ],
)
def test_tpu_pod_waits_for_a_slice_on_its_way(tmp_path, states, calls):
    env = {"TPU_POLL_SECONDS": "0"}
    p, log = _run_pod(_checkout(tmp_path), tmp_path, states=states, env=env)
    assert p.returncode == 0, p.stderr
    assert _calls(log) == [*calls, "scp", "ssh", "ssh"]
    assert f"is {states[0]}: waiting for READY" in p.stderr


def test_tpu_pod_does_not_take_a_failed_describe_for_no_slice(tmp_path):
    # Auth or network trouble is not "no such slice": creating one then would clash
    # with the existing slice; while waiting, a blip is asked again.
    p, log = _run_pod(_checkout(tmp_path), tmp_path, states=["NETWORK_ERROR"])
    assert p.returncode == 1 and "cannot tell whether slice lda exists" in p.stderr
    assert "problem refreshing your auth" in p.stderr and _calls(log) == ["describe"]
    env = {"TPU_POLL_SECONDS": "0"}
    tmp = tmp_path / "waiting"
    tmp.mkdir()
    states = ["CREATING", "NETWORK_ERROR", "READY"]
    p, log = _run_pod(_checkout(tmp), tmp, states=states, env=env)
    assert p.returncode == 0, p.stderr
    assert _calls(log) == ["describe"] * 3 + ["scp", "ssh", "ssh"]  # no create
    assert "describe failed" in p.stderr


def test_tpu_pod_waits_for_ready_only_so_long(tmp_path):
    env = {"TPU_POLL_SECONDS": "0", "TPU_READY_TIMEOUT": "0"}
    p, log = _run_pod(_checkout(tmp_path), tmp_path, states=["CREATING"], env=env)
    assert p.returncode == 1 and "still CREATING" in p.stderr
    assert _calls(log) == ["describe"]


@pytest.mark.parametrize("state", ["STOPPED", "SOMETHING_NEW"])
def test_tpu_pod_stops_on_a_state_it_does_not_handle_and_names_it(tmp_path, state):
    p, log = _run_pod(_checkout(tmp_path), tmp_path, states=[state])
    assert p.returncode == 1 and f"in state {state}" in p.stderr
    assert _calls(log) == ["describe"]


def test_tpu_pod_reuses_a_ready_slice(tmp_path):
    p, log = _run_pod(_checkout(tmp_path), tmp_path, states=["READY"])
    assert p.returncode == 0, p.stderr
    assert _calls(log) == ["describe", "scp", "ssh", "ssh"]


# ---- tpu_pod.sh: the image for the type; flags


def _create(*args, tmp_path):
    p = _dry(
        "tpu_pod.sh",
        "--dry-run",
        *("--name", "lda", "--zone", "z", "--config", "c.py", "--workdir", "gs://b/r"),
        *args,
        env={"TMPDIR": str(tmp_path)},
    )
    creates = [c for c in _commands(p.stdout) if c.startswith("gcloud compute tpus tpu-vm create")]
    return p, [_argv(c) for c in creates]


@pytest.mark.parametrize(
    "tpu, version",
    [
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),  # v5e
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v3-8", "tpu-ubuntu2204-base"),
        ("v2-8", "tpu-ubuntu2204-base"),
    ],
)
def test_tpu_pod_default_image_follows_the_type(tmp_path, tpu, version):
    # The base image on a v5e, v5p or v6e is an invalid pairing (Google's runtime table).
    p, (create,) = _create("--type", tpu, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    assert create[create.index("--accelerator-type") + 1] == tpu
    assert create[create.index("--version") + 1] == version


def test_tpu_pod_an_explicit_image_wins_and_an_unknown_type_needs_one(tmp_path):
    p, (create,) = _create("--type", "v5p-8", "--version", "my-image", tmp_path=tmp_path)
    assert create[create.index("--version") + 1] == "my-image"
    p, creates = _create("--type", "tpu9-8", tmp_path=tmp_path)
    assert p.returncode == 2 and "--version" in p.stderr and not creates
    p, (create,) = _create("--type", "tpu9-8", "--version", "v9-img", tmp_path=tmp_path)
    assert p.returncode == 0 and create[create.index("--version") + 1] == "v9-img"


def test_tpu_pod_takes_flags_with_equals_and_underscores(tmp_path):
    # README: every command takes its long flags with - or _ alike; --flag=value too.
    # Values (an image name with _) and --config.* overrides stay as written.
    common = ("--config.batch_size=8", MESH)
    std = _dry(
        "tpu_pod.sh",
        *("--dry-run", "--name", "lda", "--zone", "z", "--type", "v4-8", "--spot"),
        *("--config", "c.py", "--workdir", "gs://b/r", "--version", "my_image"),
        *("--python", "/opt/py", "--project", "p", *common),
        env={"TMPDIR": str(tmp_path)},
    )
    alt = _dry(
        "tpu_pod.sh",
        *("--dry_run", "--name=lda", "--zone", "z", "--type=v4-8", "--spot"),
        *("--config=c.py", "--workdir=gs://b/r", "--version=my_image"),
        *("--python=/opt/py", "--project", "p", *common),
        env={"TMPDIR": str(tmp_path)},
    )
    assert std.returncode == 0 and alt.returncode == 0, alt.stderr

    def gcloud(p):  # the tar and scp commands name the run's own stage directory
        cmds = _commands(p.stdout)
        return [
            c
            for c in cmds
            if c.startswith(("gcloud compute tpus tpu-vm create", "gcloud compute tpus tpu-vm ssh"))
        ]

    assert gcloud(alt) == gcloud(std) and len(gcloud(std)) == 3
    create = _argv(gcloud(alt)[0])
    assert create[-5:] == ["--accelerator-type", "v4-8", "--version", "my_image", "--spot"]
    ssh = _argv(gcloud(alt)[-1])
    assert shlex.split(ssh[ssh.index("--command") + 1])[-2:] == list(common)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--name",), "missing value for --name"),
        (("--spot=yes",), "--spot takes no value"),
        (("--zonee", "z"), "unknown argument: --zonee"),
    ],
)
def test_tpu_pod_refuses_bad_flags_clearly(args, message):
    p = _dry("tpu_pod.sh", "--dry-run", *args)
    assert p.returncode == 2 and message in p.stderr and p.stdout == ""


@pytest.mark.parametrize("script", ["local.sh", "gpu_slurm.sbatch"])
def test_local_and_slurm_take_dry_run_with_an_underscore(script):
    p = _dry(script, "--dry_run", "c.py", "/w", env={"PYTHON": "/opt/env/bin/python"})
    assert p.returncode == 0, p.stderr
    (cmd,) = _commands(p.stdout)
    assert shlex.split(cmd)[-6:] == [
        "-m",
        "ldattn_jax.train",
        "--config",
        "c.py",
        "--workdir",
        "/w",
    ]


@pytest.mark.parametrize("script", ["local.sh", "gpu_slurm.sbatch"])
def test_local_and_slurm_refuse_an_unknown_option_instead_of_taking_it_as_config(script):
    # A mistyped --dryrun was CONFIG, and the run started for real.
    p = _dry(script, "--dryrun", "c.py", "/w", env={"PYTHON": "/bin/false"})
    assert p.returncode == 2 and "unknown option before CONFIG: --dryrun" in p.stderr
    assert "usage" in p.stderr and p.stdout == ""
