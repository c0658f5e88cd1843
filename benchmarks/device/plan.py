"""One device call: the issue-6 measurements in order of importance, inside a time budget.

    python benchmarks/device/plan.py {gpu,host,extra} --budget-s 360 --json OUT.json [--smoke]

A lent GPU comes with 15 minutes of device time for the whole task, start-up
included, so the kit gets two calls (``benchmarks/device/README.md``). Each
call runs one plan in ONE process (one JAX start, one CUDA context, compiles
cached in memory) and goes down its steps most important first:

  gpu    train bf16 398/224: lda_st and xception at batch 128, then timm's
         ``legacy_xception`` at 128 in the same process (goals 1, 2, 3), the
         same at batch 32; then lda_spatial/lda_temporal, the stencil forms of
         the convs (decides ``use_stencils()``'s GPU default) and eval.
  host   predict (8/16/1 extraction threads), then the loader (grain workers
         0..8, raw then zstd) (goals 5, 4); needs dlib's shape predictor.
  extra  a real training run (grain feeding lda_st b32: img/s, input wait),
         fp32 steps, the largest bf16 batch that fits, each op alone.

A step starts only if the budget still holds what a step of its kind took
(or a default guess before the first one); otherwise it is listed under
``skipped`` with the seconds that were left, so a short machine still returns
every row it could finish. The JSON is rewritten after every step.
``--smoke`` shrinks every step (demo geometry, batch 2, timm on the CPU) to
check the plan on a machine without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Before JAX starts: timm and JAX share the GPU in this process, so JAX must
# not take 75% of it up front (torch_vs_jax.py does the same).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository (ldattn_jax, data_prep)
sys.path.insert(1, str(HERE.parent))  # benchmarks/ (torch_vs_jax)

# predict's clip, H.264 like the datasets, written by prepare.sh (the device
# has no PyAV); without it predict times an mp4v clip and says so.
CLIP = ".devcache/clip_1080p_10s_h264.mp4"  # in the repository

# What a step of each kind is guessed to need before one has run (seconds; a
# GPU train step's compile is most of it). After that, the longest seen.
DEFAULT_NEEDS_S = {
    "train": 45.0,
    "timm": 90.0,
    "eval": 25.0,
    "largest": 90.0,
    "loader": 60.0,
    "predict": 60.0,
    "ops": 60.0,
    "loop": 120.0,  # shards, a fresh compile (the schedule differs), 40 steps
}


@dataclasses.dataclass(frozen=True)
class Step:
    kind: str
    kwargs: dict

    @property
    def label(self) -> str:
        return self.kind + " " + " ".join(f"{k}={v}" for k, v in self.kwargs.items())


def plan_steps(name: str, smoke: bool = False) -> list[Step]:
    """The steps of plan ``name``, most important first."""
    small, large = (2, 4) if smoke else (32, 128)

    def train(variant, batch, dtype="bfloat16", **kw):
        return Step("train", dict(variant=variant, batch=batch, dtype=dtype, **kw))

    if name == "gpu":
        return [
            train("lda_st", large),
            train("xception", large),
            Step("timm", dict(batch=large)),
            train("lda_st", small),
            train("xception", small),
            Step("timm", dict(batch=small)),
            train("lda_spatial", large),
            train("lda_temporal", large),
            train("xception", large, stencils="on"),
            train("lda_st", large, stencils="on"),
            Step("eval", dict(variant="lda_st", batch=large)),
            Step("eval", dict(variant="xception", batch=large)),
        ]
    if name == "host":
        # Predict first: it needs the GPU host's cores and GPU together, while
        # the loader's per-core rate is CPU work already measured on 2 cores.
        return [
            Step("predict", dict(threads=(1, 2) if smoke else (8, 16, 1), video=CLIP)),
            # Threads alone (no worker processes: no shared-memory copy per
            # batch) with more cores than the 2 of CI: can they feed the GPU?
            # At the goal's batch, 128 (a 243 MB host batch). First of the
            # loader steps: the first one also builds the shards, and the plan
            # then expects every loader step to take that long, so a later one
            # may not fit.
            Step("loader", dict(encodings=("raw",), workers=(0,), read_threads=(8, 16), batch=128)),
            Step("loader", dict(encodings=("raw",), workers=(0, 1) if smoke else (0, 1, 2, 4, 8))),
            Step("loader", dict(encodings=("zstd",), workers=(0,) if smoke else (0, 2, 4))),
        ]
    if name == "extra":
        return [
            # A real training run (grain feeding the step): img/s and input wait.
            Step("loop", dict(variant="lda_st", batch=small)),
            Step("largest", dict(variant="lda_st", dtype="bfloat16")),
            train("lda_st", large, "float32"),
            train("xception", large, "float32"),
            Step("ops", dict(batch=small, dtype="bfloat16")),
            train("lda_st", small, "float32"),
            train("xception", small, "float32"),
        ]
    raise ValueError(f"unknown plan {name!r}: choose gpu, host or extra")


def run_plan(
    steps: list[Step],
    measure: dict[str, Callable[..., dict]],
    results: dict,
    *,
    budget_s: float,
    save: Callable[[], None],
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Runs ``steps`` while the budget lasts; ``measure[kind](results, **kwargs)``
    returns {section: [rows]} to append to ``results``. A failing step is
    recorded (section ``errors``) and the plan goes on."""
    start = clock()
    took: dict[str, float] = {}
    results.setdefault("skipped", [])
    for step in steps:
        left = budget_s - (clock() - start)
        needs = took.get(step.kind, DEFAULT_NEEDS_S[step.kind])
        if left < needs:
            results["skipped"].append(
                {"step": step.label, "left_s": round(left, 1), "needs_s": round(needs, 1)}
            )
            print(f"skipped {step.label}: {left:.0f} s left, {step.kind} steps need ~{needs:.0f} s")
            save()
            continue
        print(f"{step.label} ({left:.0f} s left)", flush=True)
        t0 = clock()
        try:
            for section, rows in measure[step.kind](results, **step.kwargs).items():
                results.setdefault(section, []).extend(rows)
        except Exception as e:  # out of memory, a missing package: record, go on
            results.setdefault("errors", []).append({"step": step.label, "error": repr(e)[:500]})
            print(f"  FAILED: {e!r}"[:500], flush=True)
        took[step.kind] = max(took.get(step.kind, 0.0), clock() - t0)
        save()
    results["plan_s"] = clock() - start
    save()
    return results


def measurements(smoke: bool, repeats: int, work: str) -> dict[str, Callable[..., dict]]:
    """The real measurement of each step kind (imports JAX; torch only for timm)."""
    from ldattn_jax import benchmark

    geometry = "demo" if smoke else "paper"

    def train(results, variant, batch, dtype, stencils="auto"):
        previous = os.environ.get("LDATTN_STENCILS")
        os.environ["LDATTN_STENCILS"] = stencils  # read when the step is traced
        try:
            row = benchmark.train_step_measurement(
                variant, batch=batch, dtype=dtype, geometry=geometry, repeats=repeats
            )
        finally:
            if previous is None:
                os.environ.pop("LDATTN_STENCILS")
            else:
                os.environ["LDATTN_STENCILS"] = previous
        row["stencils_setting"] = stencils  # "auto" = the platform's default form
        print(benchmark._row_text(row), flush=True)
        return {"train": [row]}

    def timm(results, batch):
        """timm in this process, set beside our xception row of the same batch."""
        size = benchmark.bench_config("xception", geometry=geometry).model.image_size
        ours = [
            r for r in results.get("train", [])
            if r["variant"] == "xception" and r["batch"] == batch
            and r["dtype"] == "bfloat16" and r["stencils_setting"] == "auto"
        ]  # fmt: skip
        if not ours:
            raise RuntimeError(f"no bf16 xception train row at batch {batch} to compare with")
        import torch_vs_jax

        problem = torch_vs_jax.one_device_problem()
        if problem:
            raise RuntimeError(problem)
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and not smoke:
            raise RuntimeError("torch sees no CUDA GPU: a CPU timm number is no comparison")
        t = torch_vs_jax.timm_train_step(batch, size, repeats, 3, device, "bfloat16")
        if device == "cuda":
            torch.cuda.empty_cache()  # hand torch's cached blocks back before JAX goes on
        mine = {k: ours[-1][k] for k in ("step_s", "images_per_s", "compile_s")}
        mine["params"] = torch_vs_jax.our_param_count(size)
        row = torch_vs_jax.side_by_side_row(batch, t, mine)
        row.update(size=size, dtype="bfloat16", torch=torch.__version__, torch_device=device)
        return {"side_by_side": [row]}

    def evaluate(results, variant, batch):
        row = benchmark.eval_measurement(
            variant, batch=batch, dtype="bfloat16", geometry=geometry, repeats=repeats
        )
        print(f"  eval {variant} b{batch}: {row['images_per_s']:.1f} img/s", flush=True)
        return {"eval": [row]}

    def largest(results, variant, dtype):
        found = benchmark.largest_batch(variant, dtype=dtype, geometry=geometry, start=128)
        if found is None:
            raise RuntimeError("this backend reports no device memory limit (CPU)")
        return train(results, variant, found, dtype) | {
            "largest": [{"variant": variant, "dtype": dtype, "batch": found}]
        }

    def loader(results, encodings, workers, read_threads=None, batch=32):
        rows = benchmark.loader_measurement(
            work=work, encodings=encodings, workers=list(workers), seconds=1.0 if smoke else 3.0,
            size=62 if smoke else 398, read_threads=read_threads and list(read_threads),
            batch=batch,
        )  # fmt: skip
        for r in rows:
            print(
                f"  {r['encoding']} batch {r['batch']} workers {r['workers']} x "
                f"{r['read_threads']} threads: {r['stacks_per_s']:.0f} stacks/s, "
                f"{r['stacks_per_cpu_s']:.0f} per CPU-second"
            )
        return {"loader": rows}

    def predict(results, threads, video):
        video = HERE.parent.parent / video
        video = None if smoke or not video.exists() else str(video)  # smoke: a 2-s clip
        rows = benchmark.predict_measurement(
            work=work, geometry=geometry, repeats=1 if smoke else 3, workers=list(threads),
            seconds=2.0 if smoke else 10.0, video=video,
        )  # fmt: skip
        for r in rows:
            print(f"  {r['workers']} thread(s): {r['total_s']:.2f} s/video")
        return {"predict": rows}

    def loop(results, variant, batch):
        row = benchmark.train_loop_measurement(
            work=work, variant=variant, batch=batch, dtype="bfloat16", geometry=geometry,
            steps=8 if smoke else 40,
        )  # fmt: skip
        print(f"  {variant} b{batch}: {row['images_per_s']:.1f} img/s, "
              f"input wait {100 * row['input_wait_fraction']:.0f}%", flush=True)  # fmt: skip
        return {"loop": [row]}

    def ops(results, batch, dtype):
        import xception_ops

        rows = xception_ops.measure(batch=batch, size=62 if smoke else 398, dtype=dtype,
                                    repeats=repeats)  # fmt: skip
        return {"ops": rows}

    return {
        "train": train, "timm": timm, "eval": evaluate, "largest": largest,
        "loader": loader, "predict": predict, "ops": ops, "loop": loop,
    }  # fmt: skip


def main(argv=None) -> int:
    from data_prep import cli  # flags with - or _ alike, as every command (README)

    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plan", choices=["gpu", "host", "extra"])
    p.add_argument("--budget-s", type=float, required=True, help="seconds this plan may take")
    p.add_argument("--json", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed: checks only")
    p.add_argument(
        "--work", default="", help="scratch dir, kept (default: a temp dir, removed at the end)"
    )
    args = p.parse_args(argv)
    from ldattn_jax import bench_utils

    results = {
        "machine": bench_utils.machine_info(),
        "plan": args.plan,
        "budget_s": args.budget_s,
        "geometry": "demo" if args.smoke else "paper",
        "smoke": args.smoke,
    }
    print("machine:", results["machine"], flush=True)
    with bench_utils.scratch_dir(args.work, prefix="ldattn_plan_") as work:
        run_plan(
            plan_steps(args.plan, args.smoke),
            measurements(args.smoke, 1 if args.smoke else args.repeats, work),
            results,
            budget_s=args.budget_s,
            save=lambda: bench_utils.write_json(args.json, results),
        )
    print(f"wrote {args.json} ({results['plan_s']:.0f} s; {len(results['skipped'])} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
