"""benchmarks/device/plan.py: steps in order of importance inside a time budget.

The plan runs for real only on a lent GPU (15 minutes of device time per
task, start-up included), so what CI checks is its scheduling: a step starts
only while the budget still holds what a step of its kind took, a failing step
is recorded and the plan goes on, the JSON is saved after every step, and the
train measurement sets and restores the conv form it was asked for.
"""

import importlib.util
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


def test_the_gpu_plan_measures_the_goals_first(plan):
    first = plan.plan_steps("gpu")[:3]
    assert [s.kwargs.get("variant") for s in first] == ["lda_st", "xception", None]
    assert [s.kind for s in first] == ["train", "train", "timm"]
    assert {s.kwargs["batch"] for s in first} == {128}
    assert all(s.kwargs.get("dtype", "bfloat16") == "bfloat16" for s in first)
    with pytest.raises(ValueError, match="unknown plan 'gpu2'"):
        plan.plan_steps("gpu2")


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
    # prepare.sh writes the clip, the host call carries it, predict times it.
    (step,) = [s for s in plan.plan_steps("host") if s.kind == "predict"]
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
    plan.measurements(smoke=False, repeats=1, work="/w")["predict"]({}, (8,), clip)
    assert seen["video"] == str(fake_repo / clip) and seen["workers"] == [8]
