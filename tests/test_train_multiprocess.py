"""Two processes on localhost (CPU, gloo collectives) train, agree, save and restore.

Each process has one CPU device; the mesh [('data', 1), ('fsdp', 2)] spans both,
so large kernels are split across the processes and the checkpoint is really
sharded (each process writes and reads its own half). A second, faster case
validates on a mesh whose hosts are interleaved, as jax.make_mesh lays out TPU pods.
"""

import json
import os
import subprocess
import sys
import time

import portpicker
import pytest
from test_train_helpers import ROOT, build_tiny_shards, jit_cache_env, tiny_args

DRIVER = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from ldattn_jax import train
from ldattn_jax.config_utils import load_config
train.maybe_initialize_distributed()
assert jax.process_count() == 2 and jax.device_count() == 2, jax.devices()
config = load_config("configs/demo.py", sys.argv[2:])
r = train.train_and_evaluate(config, sys.argv[1])
kernel = r.state[0]["backbone"]["block3"]["sepconv2"]["pointwise"]["kernel"][...]
print("RESULT " + json.dumps({
    "process": jax.process_index(), "step": r.step, "loss": r.last_metrics["loss"],
    "val_auc": r.last_metrics.get("val_auc"),
    "kernel_spec": str(kernel.sharding.spec),
    "local_shape": list(kernel.addressable_shards[0].data.shape),
}))
"""


# Both processes together, cold compilation cache, on a loaded 2-core CI VM.
DEADLINE_S = 900
# What process 0 prints when its coordinator cannot bind the port (grpc, in
# jaxlib's libjax_common.so; the process then dies at once, before any work).
BIND_FAILED = ("Failed to add port to server", "Address already in use")


def _run_two(log_dir, workdir, args, driver=DRIVER, devices_per_process=1):
    """Runs `driver` as processes 0 and 1; returns their RESULT dicts, by process."""
    # portpicker releases the port it picks, and process 0's coordinator binds
    # it only seconds later (after importing jax), so another program may take
    # it in between. Process 0 then fails at once with grpc's bind error and
    # nothing was written to workdir: run again on a fresh port.
    os.makedirs(log_dir)
    for attempt in range(2):
        logs = [os.path.join(log_dir, f"{attempt}-process{i}.log") for i in range(2)]
        codes = _launch(
            portpicker.pick_unused_port(), logs, workdir, args, driver, devices_per_process
        )
        outs = []
        for path in logs:
            with open(path, errors="replace") as f:
                outs.append(f.read())
        bind_failed = any(m in out for out in outs for m in BIND_FAILED)
        if codes == [0, 0] or not bind_failed:
            break
    tails = "".join(
        f"\n--- process {i} (exit {codes[i]}), {logs[i]}:\n{outs[i][-3000:]}" for i in range(2)
    )
    assert codes == [0, 0], f"exit codes {codes} (None: still running, killed){tails}"
    results = []
    for out in outs:
        (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
        results.append(json.loads(line[len("RESULT ") :]))
    return sorted(results, key=lambda r: r["process"])


def _launch(port, logs, workdir, args, driver, devices_per_process):
    """Starts both processes, waits, returns their exit codes (None where killed).

    Output goes to files, not pipes: a process blocked on a full pipe that the
    test is not reading would stall the other one in a collective.
    """
    procs = []
    try:
        for i, path in enumerate(logs):
            env = dict(
                os.environ,
                **jit_cache_env(),
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
                JAX_PLATFORMS="cpu",
                JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            )
            with open(path, "w") as log:  # the child keeps its own copy of the fd
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", driver, workdir, *args],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + DEADLINE_S
        # Stop waiting as soon as one process fails: the other would block in
        # jax.distributed or a collective until its own timeout.
        while True:
            codes = [p.poll() for p in procs]
            failed = any(c not in (None, 0) for c in codes)
            if codes == [0, 0] or failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        # Never leave a process running (a failure, the deadline, or Ctrl-C).
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes


@pytest.mark.slow
def test_two_processes_train_agree_and_resume_from_a_sharded_checkpoint(tmp_path):
    shards = build_tiny_shards(str(tmp_path / "shards"), str(tmp_path / "syn"))
    workdir = str(tmp_path / "run")
    common = tiny_args(
        shards,
        "--config.mesh=[('data', 1), ('fsdp', 2)]",
        "--config.fsdp_min_size=4096",
        "--config.log_every=1",
        "--config.checkpoint_every=2",
        "--config.eval_every=2",
    )
    first = _run_two(tmp_path / "logs-first", workdir, [*common, "--config.total_steps=2"])
    assert [r["step"] for r in first] == [2, 2]
    assert first[0]["loss"] == first[1]["loss"]  # one global loss, seen by both
    assert first[0]["val_auc"] == first[1]["val_auc"] is not None
    # block3's 728x728 pointwise kernel is split in two along its largest axis.
    assert "fsdp" in first[0]["kernel_spec"] and first[0]["local_shape"] == [1, 1, 364, 728]
    ckpt = os.path.join(workdir, "checkpoints", "2")
    assert os.path.isdir(ckpt)
    iter_files = os.listdir(os.path.join(ckpt, "data_iter"))
    assert sorted(f for f in iter_files if f.startswith("process_")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]

    second = _run_two(tmp_path / "logs-second", workdir, [*common, "--config.total_steps=3"])
    assert [r["step"] for r in second] == [3, 3]
    assert second[0]["loss"] == second[1]["loss"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if '"loss"' in line]
    assert steps == [1, 2, 3]  # process 0 alone writes; the resume continued at 3


# Validation on 2 processes x 2 devices, the mesh's batch axis ordered
# [p0, p1, p0, p1] (jax.make_mesh gives v4-32 hosts [0,1,2,3,0,1,2,3,...]): each
# process's rows are not one block of the global batch. The "model" scores a
# record by its label (a logit margin of +-40: P(fake) 1 or ~4e-18), so every
# (label, score) pair reaching the metrics must match.
VALIDATE_DRIVER = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh
from ldattn_jax import metrics, sharding, train
train.maybe_initialize_distributed()
devs = jax.devices()
assert [d.process_index for d in devs] == [0, 0, 1, 1], devs
interleaved = [devs[0], devs[2], devs[1], devs[3]]
mesh = Mesh(np.asarray(interleaved).reshape(4, 1), sharding.BATCH_AXES,
            axis_types=(AxisType.Auto,) * 2)
config = ml_collections.ConfigDict(dict(batch_size=8, eval_max_batches=-1,
    model=dict(image_size=4), data=dict(read_threads=1, prefetch=1)))
labels = np.random.default_rng(0).integers(0, 2, 20)  # 20 records: the last batch is padded
source = [{"frames": np.full((1, 4, 4, 3), 255 * y, np.uint8), "label": int(y)} for y in labels]
eval_step = jax.jit(lambda state, f: (f[:, 0, 0, 0, 0].astype(np.float32) / 255.0 * 2 - 1) * 40,
                    out_shardings=sharding.batch_sharding(mesh))
seen = {}
real_metrics = metrics.binary_metrics
def spy(y, s, *args, **kwargs):
    seen.update(labels=np.asarray(y).tolist(), scores=np.asarray(s).tolist())
    return real_metrics(y, s, *args, **kwargs)
metrics.binary_metrics = spy
val = train._validate(eval_step, None, source, config, mesh, 1)
print("RESULT " + json.dumps({"process": jax.process_index(), **val, **seen,
                              "truth": sorted(labels.tolist())}))
"""


def test_validation_pairs_scores_and_labels_on_an_interleaved_mesh(tmp_path):
    results = _run_two(
        tmp_path / "logs-validate", str(tmp_path), [], driver=VALIDATE_DRIVER, devices_per_process=2
    )
    for r in results:
        # Each record's score sits next to its label.
        assert r["labels"] == [round(s) for s in r["scores"]]
        assert sorted(r["labels"]) == r["truth"]  # every record once, padding dropped
        assert (r["val_auc"], r["val_acc"], r["val_n"]) == (1.0, 1.0, 20)
