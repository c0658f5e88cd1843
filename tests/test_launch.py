"""launch/*: --dry-run prints the commands that would run, with the train command in them;
the SLURM script, run under bash with a fake srun and python, passes every argument
intact and forwards a TERM of the batch shell to training."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry(script, *args, env=None):
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "launch", script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": "/usr/bin:/bin", **(env or {})},  # no gcloud/srun needed
        timeout=60,
    )
    return proc


def _commands(out):
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


# The override docs/training.md shows, and a workdir with a space: both must reach
# python as single, unchanged arguments.
MESH = "--config.mesh=[('data', -1), ('fsdp', 4)]"
SPACED = "/shared/runs/ffpp c23"


def test_local_dry_run_prints_the_train_command():
    p = _dry("local.sh", "--dry-run", "configs/demo.py", "/tmp/wd", "--config.total_steps=3")
    assert p.returncode == 0, p.stderr
    (cmd,) = _commands(p.stdout)
    argv = shlex.split(cmd)
    assert argv[1:] == [
        "-m",
        "ldattn_jax.train",
        "--config",
        "configs/demo.py",
        "--workdir",
        "/tmp/wd",
        "--config.total_steps=3",
    ]


def test_tpu_pod_dry_run_creates_installs_and_trains_on_all_workers():
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
    )
    assert p.returncode == 0, p.stderr
    cmds = _commands(p.stdout)
    assert cmds[0].startswith("gcloud compute tpus tpu-vm create lda --zone us-central2-b")
    assert "--accelerator-type v4-32" in cmds[0]
    ssh = [shlex.split(c) for c in cmds if c.startswith("gcloud compute tpus tpu-vm ssh lda")]
    assert len(ssh) == 2 and all("--worker=all" in c for c in ssh)
    remote = [c[c.index("--command") + 1] for c in ssh]
    assert "pip install" in remote[0] and "jax[tpu]==0.10.2" in remote[0]
    # The gs:// workdir needs gcsfs: the project's pinned extra, not whatever is newest.
    install = shlex.split(remote[0])
    assert install[install.index("-e") + 1] == ".[gcs]" and "gcsfs" not in install
    # What each worker's shell runs: cd, then python with the arguments as given.
    train = shlex.split(remote[1])
    assert train[:3] == ["cd", "~/ldattn_jax", "&&"]
    assert train[4:] == [
        *("-m", "ldattn_jax.train", "--config", "configs/ffpp.py"),
        *("--workdir", "gs://bucket/runs/ffpp", "--config.batch_size=256"),
    ]


def test_tpu_pod_quotes_config_workdir_and_overrides_for_the_remote_shell():
    p = _dry(
        "tpu_pod.sh",
        "--dry-run",
        *("--name", "lda", "--zone", "z", "--type", "v4-8"),
        *("--config", "configs/my ffpp.py", "--workdir", "gs://bucket/runs/a b"),
        MESH,
    )
    assert p.returncode == 0, p.stderr
    ssh = shlex.split(_commands(p.stdout)[-1])
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
    env = {"SLURM_NTASKS": "16", "SLURM_JOB_NODELIST": "gpu7,gpu8"}
    p = _dry("gpu_slurm.sbatch", "--dry-run", "configs/ffpp.py", "/shared/runs/ffpp", env=env)
    assert p.returncode == 0, p.stderr
    (cmd,) = _commands(p.stdout)
    argv = shlex.split(cmd)
    assert argv[0] == "srun"
    assert "--export=ALL,JAX_COORDINATOR_ADDRESS=gpu7:12355,JAX_NUM_PROCESSES=16" in argv
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
"$@" &
task=$!
trap 'kill -TERM "$task"' TERM
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
        **os.environ,
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
        "JAX_COORDINATOR_ADDRESS": "gpu7:12355",
        "JAX_NUM_PROCESSES": "1",
    }
    # The printed command, pasted into a shell, is the same command.
    (cmd,) = _commands(stdout)
    assert shlex.split(cmd)[-8:] == got["argv"]


def test_gpu_slurm_forwards_a_term_of_the_batch_shell_to_training(tmp_path):
    # SLURM's notice (or scancel, preemption) may reach only the batch shell;
    # training must get it to save, and the job must wait for that and exit 0.
    proc, out = _slurm(tmp_path, "configs/ffpp.py", "/shared/runs/ffpp", wait=10)
    deadline = time.time() + 30
    while not out.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert out.exists(), proc.stderr.read() if proc.poll() is not None else "no start"
    os.kill(proc.pid, signal.SIGTERM)  # the batch shell only, as --signal=B:TERM does
    proc.communicate(timeout=30)
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
