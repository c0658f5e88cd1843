"""launch/*: --dry-run prints the commands that would run, with the train command in them."""

import os
import shlex
import subprocess

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
    ssh = [c for c in cmds if c.startswith("gcloud compute tpus tpu-vm ssh lda")]
    assert len(ssh) == 2 and all("--worker=all" in c for c in ssh)
    assert "pip install" in ssh[0] and "jax[tpu]==0.10.2" in ssh[0]
    train = ssh[1]
    assert "-m ldattn_jax.train --config configs/ffpp.py --workdir gs://bucket/runs/ffpp" in train
    assert train.endswith("--config.batch_size=256")


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
    assert cmd.startswith("srun ")
    assert "JAX_COORDINATOR_ADDRESS=gpu7:12355" in cmd and "JAX_NUM_PROCESSES=16" in cmd
    assert "JAX_PROCESS_ID=$SLURM_PROCID" in cmd
    assert '-m ldattn_jax.train --config "configs/ffpp.py" --workdir "/shared/runs/ffpp"' in cmd


@pytest.mark.parametrize("script", ["local.sh", "gpu_slurm.sbatch"])
def test_missing_arguments_print_usage(script):
    p = _dry(script, "--dry-run")
    assert p.returncode == 2 and "usage" in p.stderr
