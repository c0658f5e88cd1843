"""benchmarks/device/plan.py: steps in order of importance inside a time budget.

The plan runs for real only on a lent GPU (15 minutes of device time per
task, start-up included), so what CI checks is its scheduling: a step starts
only while the budget still holds what a step of its kind took, a failing step
is recorded and the plan goes on, the JSON is saved after every step, and the
train measurement sets and restores the conv form it was asked for.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

PLAN = Path(__file__).resolve().parent.parent / "benchmarks" / "device" / "plan.py"


@pytest.fixture(scope="module")
def plan():
    spec = importlib.util.spec_from_file_location("device_plan", PLAN)
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_plan"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_steps_run_while_the_budget_holds_them(plan):
    clock = FakeClock()
    ran = []

    def train(results, variant, batch, **_):
        clock.t += 100.0  # each train step takes 100 s
        ran.append((variant, batch))
        return {"train": [{"variant": variant, "batch": batch}]}

    def timm(results, batch):
        raise RuntimeError("CUDA out of memory")  # recorded; the plan goes on

    steps = [
        plan.Step("train", {"variant": "lda_st", "batch": 128}),
        plan.Step("timm", {"batch": 128}),
        plan.Step("train", {"variant": "xception", "batch": 128}),
        plan.Step("train", {"variant": "lda_st", "batch": 32}),
    ]
    saved, results = [], {}
    save = lambda: saved.append(len(results.get("train", [])))
    plan.run_plan(steps, {"train": train, "timm": timm}, results, budget_s=250.0, save=save,
                  clock=clock)  # fmt: skip
    # 100 s used after the first, 200 after the second train step: 50 s left
    # cannot hold a third, which the first one showed takes 100 s.
    assert ran == [("lda_st", 128), ("xception", 128)]
    assert [r["variant"] for r in results["train"]] == ["lda_st", "xception"]
    (err,) = results["errors"]
    assert err["step"] == "timm batch=128" and "out of memory" in err["error"]
    (skip,) = results["skipped"]
    assert skip == {"step": "train variant=lda_st batch=32", "left_s": 50.0, "needs_s": 100.0}
    assert results["plan_s"] == 200.0
    assert saved[:4] == [1, 1, 2, 2]  # saved after every step, the skipped one too


def test_the_goals_loader_step_comes_first_since_it_pays_for_the_shards(plan):
    # The first loader step builds the shards; the budget then expects every
    # loader step to take as long, so the goal's own (batch 128, threads, no
    # worker processes) must not be the one left out.
    loaders = [s.kwargs for s in plan.plan_steps("host") if s.kind == "loader"]
    assert loaders[0]["batch"] == 128 and loaders[0]["workers"] == (0,)
    assert loaders[0]["encodings"] == ("raw",)


def test_before_a_step_of_a_kind_has_run_its_default_guess_decides(plan):
    clock = FakeClock()
    results = {}
    plan.run_plan([plan.Step("predict", {"threads": (1, 8)})], {"predict": None}, results,
                  budget_s=plan.DEFAULT_NEEDS_S["predict"] - 1, save=lambda: None,
                  clock=clock)  # fmt: skip
    assert results["skipped"][0]["needs_s"] == plan.DEFAULT_NEEDS_S["predict"]


@pytest.mark.parametrize("name", ["gpu", "host", "extra"])
def test_every_step_of_every_plan_has_a_guess_and_a_measurement(plan, name):
    kinds = set(plan.measurements(smoke=True, repeats=1, work="/nonexistent"))
    for step in plan.plan_steps(name):
        assert step.kind in plan.DEFAULT_NEEDS_S and step.kind in kinds, step


def _goal_steps(steps):
    """(kind, variant, batch) of the goals' rows: bf16 lda_st/xception/timm, native form."""
    return [
        (s.kind, s.kwargs.get("variant"), s.kwargs["batch"])
        for s in steps
        if s.kind == "timm"
        or (s.kind == "train" and s.kwargs["variant"] in ("lda_st", "xception")
            and s.kwargs["dtype"] == "bfloat16" and "stencils" not in s.kwargs)
    ]  # fmt: skip


def test_the_gpu_plan_measures_the_goals_first(plan):
    steps = plan.plan_steps("gpu")
    first = steps[:3]
    # Goal 1 first, whatever torch does later in the process; timm after the
    # xception row it is compared with (beside JAX's capped pool).
    assert [(s.kind, s.kwargs.get("variant")) for s in first] == [
        ("train", "lda_st"), ("train", "xception"), ("timm", None)
    ]  # fmt: skip
    assert {s.kwargs["batch"] for s in first} == {128}
    assert all(s.kwargs.get("dtype", "bfloat16") == "bfloat16" for s in first)
    # Every goal row (goals 1, 2, 3 at both batches) before any other row, and
    # timm at 32 directly after the xception row it is set beside.
    goals = _goal_steps(steps)
    assert [(s.kind, s.kwargs.get("variant"), s.kwargs["batch"]) for s in steps[:6]] == goals
    assert goals[3:] == [("train", "lda_st", 32), ("train", "xception", 32), ("timm", None, 32)]
    with pytest.raises(ValueError, match="unknown plan 'gpu2'"):
        plan.plan_steps("gpu2")


def test_the_guess_is_the_kinds_last_step_not_its_cold_first_one(plan):
    # The first train step pays one-off costs (autotuning state, imports) the
    # later ones do not; taking the longest as the guess skipped steps that
    # fit (review, finding 3: 39 s of a 120 s budget left unused).
    clock = FakeClock()
    times = iter([75.0, 40.0, 40.0, 40.0, 40.0])
    ran = []

    def train(results, variant, batch, **_):
        clock.t += next(times)
        ran.append(variant)
        return {}

    steps = [plan.Step("train", {"variant": v, "batch": 128}) for v in "abcde"]
    results = {}
    plan.run_plan(steps, {"train": train}, results, budget_s=200.0, save=lambda: None,
                  clock=clock)  # fmt: skip
    # 75 + 40 + 40 = 155 s: 45 s left hold a 40-s step (not the first's 75).
    assert ran == ["a", "b", "c", "d"]
    (skip,) = results["skipped"]
    assert skip == {"step": "train variant=e batch=128", "left_s": 5.0, "needs_s": 40.0}


def test_a_failed_step_leaves_the_guess_as_it_was(plan):
    # A step that fails at once (a missing package) says nothing of what one
    # that runs needs: the next step of the kind is not admitted on its 1 s.
    clock = FakeClock()

    def timm(results, batch):
        clock.t += 1.0
        raise RuntimeError("no module named torch")

    steps = [plan.Step("timm", {"batch": 128}), plan.Step("timm", {"batch": 32})]
    results = {}
    budget = plan.DEFAULT_NEEDS_S["timm"] + 0.5
    plan.run_plan(steps, {"timm": timm}, results, budget_s=budget, save=lambda: None,
                  clock=clock)  # fmt: skip
    assert len(results["errors"]) == 1
    assert results["skipped"][0]["needs_s"] == plan.DEFAULT_NEEDS_S["timm"]


def test_the_eval_guess_holds_a_paper_sized_eval_step(plan):
    # A 398/224 lda_st forward compile plus 6 calls of 243 MB each way.
    assert plan.DEFAULT_NEEDS_S["eval"] >= 45.0
    assert plan.DEFAULT_NEEDS_S["largest"] >= 4 * plan.DEFAULT_NEEDS_S["train"]


def test_the_deadline_takes_the_set_up_and_warm_up_out_of_the_budget(plan, monkeypatch, tmp_path):
    # run_part.sh passes its own start + the call's budget as --deadline: the
    # wheels, imports and warm-up before the plan come out of the budget, and
    # the warm-up runs before the plan's clock starts.
    now = [1000.0]
    monkeypatch.setattr(plan.time, "time", lambda: now[0])
    order = []

    def warm_up(smoke):
        order.append("warm_up")
        now[0] += 30.0
        return 30.0

    def run_plan(steps, measure, results, *, budget_s, save, **_):
        order.append("run_plan")
        results.update(budget_seen=budget_s, plan_s=0.0, skipped=[])
        save()
        return results

    monkeypatch.setattr(plan, "warm_up", warm_up)
    monkeypatch.setattr(plan, "run_plan", run_plan)
    monkeypatch.setattr(plan, "measurements", lambda *a: {})
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    out = tmp_path / "gpu.json"
    # The call started 40 s ago (set-up), with 390 s for all of it.
    assert plan.main(["gpu", "--deadline", "1350", "--started", "960", "--json", str(out),
                      "--smoke"]) == 0  # fmt: skip
    assert order == ["warm_up", "run_plan"]
    # JAX's pool capped for the gpu plan, so timm fits beside it (before JAX starts).
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == plan.JAX_MEM_FRACTION
    got = json.loads(out.read_text())
    assert got["budget_seen"] == got["budget_s"] == 1350 - 1030
    assert got["setup_s"] == 40.0 and got["warm_up_s"] == 30.0 and got["deadline"] == 1350
    # Both given: the tighter; past the deadline: nothing left, not a negative budget.
    assert plan.plan_budget(100.0, 2000.0, 1950.0) == 50.0
    assert plan.plan_budget(100.0, None, 1950.0) == 100.0
    assert plan.plan_budget(None, 1000.0, 1950.0) == 0.0
    with pytest.raises(SystemExit):
        plan.main(["gpu", "--json", str(out)])


def test_the_warm_up_never_stops_the_plan(plan, monkeypatch, capsys):
    from ldattn_jax import benchmark

    def boom(config):
        raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY")

    monkeypatch.setattr(benchmark, "_jitted_train_step", boom)
    assert plan.warm_up(smoke=True) >= 0.0
    assert "CUDA_ERROR_OUT_OF_MEMORY" in capsys.readouterr().out
    # Nor is torch imported before the JAX goal rows (its CUDA libraries share
    # sonames with JAX's): an import would fail here, and say so.
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "torch", None)
    plan.warm_up(smoke=True)
    assert "torch" not in capsys.readouterr().out


def test_train_step_runs_the_asked_conv_form_and_restores_it(plan, monkeypatch):
    monkeypatch.delenv("LDATTN_STENCILS", raising=False)
    measure = plan.measurements(smoke=True, repeats=1, work="/nonexistent")
    # Batch 8: the 8 simulated devices of conftest split it.
    out = measure["train"]({}, "xception", 8, "float32", stencils="off")
    (row,) = out["train"]
    assert row["stencils"] is False and row["stencils_setting"] == "off"
    assert row["geometry"] == "62/56"
    assert "LDATTN_STENCILS" not in os.environ
    # timm is compared only with our bf16 row of the same batch: none here.
    with pytest.raises(RuntimeError, match="no bf16 xception train row at batch 8"):
        measure["timm"](out, 8)
    # timm trains on one GPU; ours on the suite's 8 simulated devices is no
    # comparison (before torch is even imported).
    bf16 = {"train": [dict(row, dtype="bfloat16", stencils_setting="auto")]}
    with pytest.raises(RuntimeError, match="JAX sees 8 devices"):
        measure["timm"](bf16, 8)


def test_host_predict_times_the_carried_h264_clip(plan, monkeypatch, tmp_path):
    # prepare.sh writes the clip, the host call carries it, predict times it:
    # first in bfloat16 (the goals' dtype) with the goal's 8 threads and more,
    # float32 last, where the budget still allows.
    step, fp32 = [s for s in plan.plan_steps("host") if s.kind == "predict"]
    assert plan.plan_steps("host")[0] == step and plan.plan_steps("host")[-1] == fp32
    assert step.kwargs["dtype"] == "bfloat16" and 8 in step.kwargs["threads"]
    assert fp32.kwargs["dtype"] == "float32" and fp32.kwargs["video"] == step.kwargs["video"]
    clip = step.kwargs["video"]
    kit = PLAN.parent
    assert clip in (kit / "prepare.sh").read_text()
    assert f"`{clip}`" in (kit / "README.md").read_text().split("run_part.sh host`")[1]
    seen = {}
    from ldattn_jax import benchmark

    monkeypatch.setattr(
        benchmark,
        "predict_measurement",
        lambda **kw: seen.update(kw) or [{"workers": 1, "total_s": 1.0}],
    )
    monkeypatch.setattr(plan, "HERE", Path("/nonexistent/benchmarks/device"))
    plan.measurements(smoke=False, repeats=1, work="/w")["predict"]({}, (8,), clip)
    assert seen["video"] is None  # not prepared here: the synthetic clip, which says so
    fake_repo = tmp_path / "repo"
    (fake_repo / ".devcache").mkdir(parents=True)
    (fake_repo / clip).write_bytes(b"x")
    monkeypatch.setattr(plan, "HERE", fake_repo / "benchmarks" / "device")
    plan.measurements(smoke=False, repeats=1, work="/w")["predict"]({}, (8,), clip, "bfloat16")
    assert seen["video"] == str(fake_repo / clip) and seen["workers"] == [8]
    assert seen["dtype"] == "bfloat16"


def test_a_failing_timm_step_hands_torchs_memory_back_before_jax_goes_on(plan, monkeypatch):
    # timm's b128 step runs before lda_st's: should it fail (out of memory),
    # torch's cached blocks must go back to CUDA all the same, or the JAX
    # steps after it find the GPU full.
    import types

    calls = []
    cuda = types.SimpleNamespace(
        is_available=lambda: True, empty_cache=lambda: calls.append("empty_cache")
    )
    torch = types.SimpleNamespace(
        cuda=cuda,
        __version__="0",
        _dynamo=types.SimpleNamespace(reset=lambda: calls.append("reset")),
        Tensor=type("Tensor", (), {}),  # scipy's array-API checks look for it
    )

    def timm_train_step(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    tvj = types.SimpleNamespace(one_device_problem=lambda: None, timm_train_step=timm_train_step)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch_vs_jax", tvj)
    measure = plan.measurements(smoke=False, repeats=1, work="/nonexistent")
    ours = {"train": [{"variant": "xception", "batch": 128, "dtype": "bfloat16",
                       "stencils_setting": "auto", "step_s": 0.1, "images_per_s": 1280.0,
                       "compile_s": 30.0}]}  # fmt: skip
    with pytest.raises(RuntimeError, match="timm batch 128: .*out of memory"):
        measure["timm"](ours, 128)
    assert calls == ["reset", "empty_cache"]


def test_on_plausible_h200_timings_every_goal_row_of_the_gpu_plan_runs(plan):
    # What a 390-s call might leave the plan after ~50 s of set-up and
    # warm-up; train steps 50 s (the first) then 40 s, timm 90 s then 70 s.
    # timm at 32 is guessed at timm at 128's 90 s with 80 s left: a goal's
    # step may start GOAL_GRACE_S short of its guess (the hard stop is 20 s
    # past the deadline), where a row that is no goal's would be skipped.
    clock = FakeClock()
    counts = {}

    def timed(kind, first, later):
        def measure(results, **kw):
            n = counts.get(kind, 0)
            counts[kind] = n + 1
            clock.t += first if n == 0 else later
            results.setdefault("ran", []).append((kind, kw.get("variant"), kw["batch"]))
            return {}

        return measure

    measure = {"train": timed("train", 50.0, 40.0), "timm": timed("timm", 90.0, 70.0),
               "eval": timed("eval", 30.0, 30.0)}  # fmt: skip
    results = {}
    steps = plan.plan_steps("gpu")
    plan.run_plan(steps, measure, results, budget_s=340.0, save=lambda: None, clock=clock)
    goals = [(s.kind, s.kwargs.get("variant"), s.kwargs["batch"]) for s in steps if s.goal]
    assert goals == _goal_steps(steps)
    assert results["ran"] == goals
    assert {s["step"] for s in results["skipped"]} == {s.label for s in steps if not s.goal}


def test_a_goals_grace_stays_inside_the_hard_stops_margin(plan):
    # A goal's step admitted GOAL_GRACE_S short of its guess still ends before
    # run_part.sh's hard stop (margin s past the deadline) if the guess holds.
    import re

    script = (PLAN.parent / "run_part.sh").read_text()
    (margin,) = re.findall(r"^margin=(\d+)$", script, re.M)
    assert 0 < plan.GOAL_GRACE_S <= int(margin) - 10
