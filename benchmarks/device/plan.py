"""One device call: the issue-6 measurements in order of importance, inside a time budget.

    python benchmarks/device/plan.py {gpu,host,extra} (--budget-s S | --deadline EPOCH_S)
        --json OUT.json [--started EPOCH_S] [--smoke]

A lent GPU comes with 15 minutes of device time for the whole task, start-up
included, so the kit gets two calls (``benchmarks/device/README.md``). Each
call runs one plan in ONE process (one JAX start, one CUDA context, compiles
cached in memory) and goes down its steps most important first:

  gpu    train bf16 398/224: lda_st at batch 128, xception at 128, timm's
         ``legacy_xception`` at 128 in the same process (JAX's pool capped)
         (goals 1, 2, 3), the same at batch 32; then lda_spatial/lda_temporal,
         the stencil forms of the convs (decides ``use_stencils()``'s GPU
         default) and eval.
  host   predict in bf16 (8/16/1 extraction threads), then the loader (grain
         workers 0..8, raw then zstd) (goals 5, 4), predict in fp32; needs
         dlib's shape predictor.
  extra  a real training run (grain feeding lda_st b32: img/s, input wait),
         fp32 steps, the largest bf16 batch that fits, each op alone.

A step starts only if the budget still holds what the last step of its kind
took (or a default guess before the first one); otherwise it is listed under
``skipped`` with the seconds that were left, so a short machine still returns
every row it could finish (a goal's step may start GOAL_GRACE_S short of
its guess). The JSON is rewritten after every step.
``--deadline`` (an epoch time; run_part.sh passes its own start plus the
call's budget) makes the set-up before the plan (wheels, imports, the
warm-up) come out of the budget, so the plan ends where the call's hard stop
expects it. One-off start-up costs (CUDA, cuDNN and cuBLAS handles, imports,
the model's first eager init) are paid in a warm-up before the plan's clock
starts, so the first step's time is a fair guess for the later ones.
``--smoke`` shrinks every step (demo geometry, batch 2, timm on the CPU) to
check the plan on a machine without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Before JAX starts: timm and JAX share the GPU in this process, so JAX must
# not take 75% of it up front (torch_vs_jax.py does the same).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The gpu plan's cap on JAX's pool, as a share of the GPU's memory (set in
# main before JAX starts; the limit holds without preallocation too; JAX's
# default is 0.75): 0.7 of an H200's ~140 GiB is ~98 GiB, above the upper
# bound of lda_st's bf16 step at batch 128 (83.4 GiB, XLA:CPU's memory
# analysis, benchmarks/README.md; XLA:GPU computes bf16 in bf16 and needs
# less), and leaves ~42 GiB for timm's legacy_xception at 128 after it. Not
# the extra plan's: its largest batch would be the cap's.
JAX_MEM_FRACTION = "0.7"

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository (ldattn_jax, data_prep)
sys.path.insert(1, str(HERE.parent))  # benchmarks/ (torch_vs_jax)

# predict's clip, H.264 like the datasets, written by prepare.sh (the device
# has no PyAV); without it predict times an mp4v clip and says so.
CLIP = ".devcache/clip_1080p_10s_h264.mp4"  # in the repository

# What a step of each kind is guessed to need before one has run (seconds; a
# GPU train step's compile is most of it). After that, what the most recent
# step of the kind that did not fail took: not the longest, since the first
# step of a kind pays one-off costs the warm-up does not reach (the first
# autotuning, torch's first compile), which would then skip later steps that
# fit. A step that overruns its guess is what the call's hard stop, 20 s past
# the deadline (run_part.sh), is for.
DEFAULT_NEEDS_S = {
    "train": 45.0,
    "timm": 90.0,
    # A 398/224 lda_st forward compile plus 6 calls that each copy a 243 MB
    # batch to the device and the maps back.
    "eval": 45.0,
    # largest_batch compiles lda_st at b128, b256, b512, ... (XLA's memory
    # analysis), then trains at the batch found.
    "largest": 240.0,
    "loader": 60.0,
    "predict": 60.0,
    "ops": 60.0,
    "loop": 120.0,  # shards, a fresh compile (the schedule differs), 40 steps
}
# A goal's step starts even this far short of its guess, at the cost of the
# rows after it that are no goal's: the guess for timm at batch 32 is timm at
# 128's time, one-off costs included, and the hard stop (run_part.sh's
# margin, 20 s past the deadline) still leaves 10 s for an overrun.
GOAL_GRACE_S = 10.0


@dataclasses.dataclass(frozen=True)
class Step:
    kind: str
    kwargs: dict
    # One of issue 6's goal rows: may start up to GOAL_GRACE_S short of its guess.
    goal: bool = dataclasses.field(default=False, compare=False)

    @property
    def label(self) -> str:
        return self.kind + " " + " ".join(f"{k}={v}" for k, v in self.kwargs.items())


def plan_steps(name: str, smoke: bool = False) -> list[Step]:
    """The steps of plan ``name``, most important first."""
    small, large = (2, 4) if smoke else (32, 128)

    def train(variant, batch, dtype="bfloat16", goal=False, **kw):
        return Step("train", dict(variant=variant, batch=batch, dtype=dtype, **kw), goal)

    if name == "gpu":
        return [
            # Goal 1 (lda_st b128) first: a torch that crashes or hangs the
            # process must not cost it. timm's b128 step comes third, after
            # the xception row it is set beside. XLA's allocator keeps its
            # peak pool for the rest of the process (preallocation off only
            # makes it grow on demand), so JAX's share is capped at
            # JAX_MEM_FRACTION of the GPU (below) and timm has the rest.
            train("lda_st", large, goal=True),
            train("xception", large, goal=True),
            Step("timm", dict(batch=large), goal=True),
            # Goals 1, 3 and 2 at batch 32, before any row that is no goal's:
            # timm at 32 needs little memory, and directly after the xception
            # row it is compared with.
            train("lda_st", small, goal=True),
            train("xception", small, goal=True),
            Step("timm", dict(batch=small), goal=True),
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
            # In bfloat16, the goal's dtype (bench_goals: "the goals assume bf16").
            Step(
                "predict",
                dict(threads=(1, 2) if smoke else (8, 16, 1), video=CLIP, dtype="bfloat16"),
                goal=True,
            ),
            # Threads alone (no worker processes: no shared-memory copy per
            # batch) with more cores than the 2 of CI: can they feed the GPU?
            # At the goal's batch, 128 (a 243 MB host batch). First of the
            # loader steps: the first one also builds the shards, and the plan
            # then expects every loader step to take that long, so a later one
            # may not fit.
            Step(
                "loader",
                dict(encodings=("raw",), workers=(0,), read_threads=(8, 16), batch=128),
                goal=True,
            ),
            Step("loader", dict(encodings=("raw",), workers=(0, 1) if smoke else (0, 1, 2, 4, 8))),
            Step("loader", dict(encodings=("zstd",), workers=(0,) if smoke else (0, 2, 4))),
            # float32 too where the budget allows: the CPU records (session 12)
            # have both, and the model's share of a video on the GPU host.
            Step("predict", dict(threads=(1,) if smoke else (8,), video=CLIP, dtype="float32")),
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
    took: dict[str, float] = {}  # kind: what its most recent step that did not fail took
    results.setdefault("skipped", [])
    for step in steps:
        left = budget_s - (clock() - start)
        needs = took.get(step.kind, DEFAULT_NEEDS_S[step.kind])
        if left + (GOAL_GRACE_S if step.goal else 0.0) < needs:
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
        else:
            # A failure (often at once: a missing package) says nothing of
            # what a step that runs needs; the guess stays.
            took[step.kind] = clock() - t0
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
        try:
            t = torch_vs_jax.timm_train_step(batch, size, repeats, 3, device, "bfloat16")
        except Exception as e:  # out of memory, say
            # Raised below, once the traceback (whose frames hold timm's
            # model and batch on the GPU) is gone and the memory handed back.
            failed = f"timm batch {batch}: {e!r}"
        else:
            failed = None
        finally:
            torch._dynamo.reset()  # the compiled step and the model it holds
            if device == "cuda":
                gc.collect()
                torch.cuda.empty_cache()  # hand torch's cached blocks back before JAX goes on
        if failed:
            raise RuntimeError(failed)
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

    def predict(results, threads, video, dtype="bfloat16"):
        video = HERE.parent.parent / video
        video = None if smoke or not video.exists() else str(video)  # smoke: a 2-s clip
        rows = benchmark.predict_measurement(
            work=work, geometry=geometry, repeats=1 if smoke else 3, workers=list(threads),
            seconds=2.0 if smoke else 10.0, video=video, dtype=dtype,
        )  # fmt: skip
        for r in rows:
            print(f"  {dtype}, {r['workers']} thread(s): {r['total_s']:.2f} s/video")
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


def warm_up(smoke: bool) -> float:
    """Pays the process's one-off start-up costs before the plan's clock starts;
    returns the seconds it took. Without it the first step carries them (CUDA,
    cuDNN and cuBLAS handles, the model code's imports, the compiles of every
    eager op of the model's first init), and that step's time is then the
    guess for every later step of its kind. Nothing here may stop the plan."""
    t0 = time.monotonic()
    try:
        import jax
        import jax.numpy as jnp

        from ldattn_jax import benchmark

        def loss(x, w):  # a conv (cuDNN) and a matmul (cuBLAS), forward and backward
            y = jax.lax.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            return jnp.sum((y.reshape(-1, 8) @ w[0, 0]).astype(jnp.float32))

        x, w = jnp.ones((2, 16, 16, 8), jnp.bfloat16), jnp.ones((3, 3, 8, 8), jnp.bfloat16)
        jax.block_until_ready(jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w))
        # The model (the backbone included) and its optimizer, built once and
        # dropped: the eager init's op compiles are cached for the steps.
        config = benchmark.bench_config(
            "lda_st", geometry="demo" if smoke else "paper", batch=8, dtype="bfloat16"
        )
        benchmark._jitted_train_step(config)
    except Exception as e:
        print(f"warm-up: {e!r} (the plan goes on)"[:500], flush=True)
    # Not torch: it brings its own CUDA libraries (cuDNN, cuBLAS: the same
    # sonames as JAX's), and whatever that does to this process must come after
    # the JAX goal rows are saved, not before all of them. The timm step imports it.
    return time.monotonic() - t0


def plan_budget(budget_s: float | None, deadline: float | None, now: float) -> float:
    """Seconds the plan may take from ``now`` (epoch seconds): ``budget_s``, cut
    to what is left before ``deadline`` where one is given."""
    limits = [b for b in (budget_s, None if deadline is None else deadline - now) if b is not None]
    if not limits:
        raise ValueError("give --budget-s or --deadline")
    return max(0.0, min(limits))


def main(argv=None) -> int:
    from data_prep import cli  # flags with - or _ alike, as every command (README)

    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plan", choices=["gpu", "host", "extra"])
    p.add_argument("--budget-s", type=float, help="seconds this plan may take")
    p.add_argument(
        "--deadline",
        type=float,
        help="epoch seconds by which the plan ends (run_part.sh: its start + the call's budget);"
        " what the set-up took comes out of the budget",
    )
    p.add_argument("--started", type=float, help="epoch seconds the call started (recorded)")
    p.add_argument("--json", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed: checks only")
    p.add_argument(
        "--work", default="", help="scratch dir, kept (default: a temp dir, removed at the end)"
    )
    args = p.parse_args(argv)
    if args.budget_s is None and args.deadline is None:
        p.error("give --budget-s or --deadline")
    if args.plan == "gpu":
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", JAX_MEM_FRACTION)
    from ldattn_jax import bench_utils

    results = {
        "machine": bench_utils.machine_info(),
        "plan": args.plan,
        "geometry": "demo" if args.smoke else "paper",
        "smoke": args.smoke,
    }
    print("machine:", results["machine"], flush=True)
    if args.deadline is not None:
        results["deadline"] = args.deadline
    if args.started is not None:  # wheels, import checks, this process's imports
        results["setup_s"] = round(time.time() - args.started, 1)
    results["warm_up_s"] = round(warm_up(args.smoke), 1)
    # The plan's clock starts here: set-up and warm-up come out of the budget.
    results["budget_s"] = plan_budget(args.budget_s, args.deadline, time.time())
    print(f"warm-up {results['warm_up_s']:.0f} s; the plan has {results['budget_s']:.0f} s",
          flush=True)  # fmt: skip
    with bench_utils.scratch_dir(args.work, prefix="ldattn_plan_") as work:
        run_plan(
            plan_steps(args.plan, args.smoke),
            measurements(args.smoke, 1 if args.smoke else args.repeats, work),
            results,
            budget_s=results["budget_s"],
            save=lambda: bench_utils.write_json(args.json, results),
        )
    print(f"wrote {args.json} ({results['plan_s']:.0f} s; {len(results['skipped'])} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
