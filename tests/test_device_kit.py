"""The GPU benchmark kit (benchmarks/device) stays in step with the project.

The kit only runs on a lent GPU machine, so what CI can check is that its
scripts parse, that it carries the versions pyproject.toml pins, and that
every part its README tells a session to run exists.
"""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parent.parent / "benchmarks" / "device"
PYPROJECT = KIT.parent.parent / "pyproject.toml"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", ["prepare.sh", "run_part.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(KIT / script)], check=True)


def test_carried_wheels_are_the_pinned_versions():
    project = _pins(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    carried = _pins((KIT / "wheels.txt").read_text().splitlines())
    shared = set(project) & set(carried)
    # The libraries the benchmark exercises must all travel at our pins.
    assert {"flax", "optax", "orbax-checkpoint", "grain", "array-record"} <= shared
    assert {k: carried[k] for k in shared} == {k: project[k] for k in shared}


def test_a_compat_flax_travels_for_a_newer_image_jax():
    # The image's jax (0.11.2 when last read) does not import our flax pin;
    # prepare.sh fetches the compat flax and run_part.sh falls back to it.
    project = _pins(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    compat = _pins((KIT / "wheels_compat.txt").read_text().splitlines())
    assert set(compat) == {"flax"} and compat["flax"] != project["flax"]
    assert "benchmarks/device/wheels_compat.txt" in (KIT / "prepare.sh").read_text()
    script = (KIT / "run_part.sh").read_text()
    pinned, carried, image = (script.index(s) for s in (
        "pinned flax does not import", ".whl/compat/flax-*.whl", "using the image's"))  # fmt: skip
    assert pinned < carried < image


def test_every_part_in_the_readme_exists():
    readme = (KIT / "README.md").read_text()
    script = (KIT / "run_part.sh").read_text()
    parts = set(re.findall(r"run_part\.sh ([a-z_]+)`", readme))
    assert {"gpu", "host", "extra", "trace"} <= parts
    for part in parts:
        assert re.search(rf"^\s+(\w+\|)*{part}(\|\w+)*\)", script, re.M), (
            f"run_part.sh has no part {part!r}"
        )


# Device time per drawn task (the device tool's README), and what the kit
# allows for what its calls do not control: one start and the warm 30 s. The
# set-up inside a call (wheels, imports) is no longer allowed for here: it
# comes out of the plan's budget, which counts from run_part.sh's start.
DEVICE_BUDGET_S = 900
START_S, WARM_S = 120, 30
# Between the hard stop and the call's timeout_s: `timeout -k 5` (SIGKILL 5 s after
# the hard stop's SIGTERM), tee's flush, the exit.
SPARE_S = 5


def test_the_two_calls_fit_the_device_budget():
    """The README's call table: both calls fit 15 minutes with a slow start;
    each call's budget, counted from run_part.sh's start, plus the hard stop's
    margin past it fits the call's timeout_s; run_part.sh's default budgets
    are the ones the table promises."""
    readme = (KIT / "README.md").read_text()
    script = (KIT / "run_part.sh").read_text()
    calls = re.findall(r"^\| \d \| `bash benchmarks/device/run_part\.sh (\w+)` \|.*\| (\d+) \| "
                       r"(\d+) s \|$", readme, re.M)  # fmt: skip
    assert [c[0] for c in calls] == ["gpu", "host"]
    assert START_S + sum(int(t) for _, t, _ in calls) + WARM_S <= DEVICE_BUDGET_S
    (margin,) = re.findall(r"^margin=(\d+)$", script, re.M)
    for part, timeout_s, budget_s in calls:
        assert int(budget_s) + int(margin) + SPARE_S <= int(timeout_s), part
        assert re.search(rf"^\s+{part}\) budget=\$\{{budget:-{budget_s}\}} ;;", script, re.M), part


def test_the_budget_counts_from_the_scripts_start():
    """The set-up (wheels, import checks, plan.py's imports) runs before the
    plan and before `timeout` starts, and the device tool's timeout_s counts
    it: the plan gets a deadline from the script's first line, and the hard
    stop is measured from the same deadline, not from when `timeout` starts."""
    script = (KIT / "run_part.sh").read_text()
    start = script.index("start=$(date +%s)")
    assert start < script.index("pip install") and start < script.index("python3 -c")
    assert "deadline=$((start + ${budget%.*}))" in script
    lines = script.splitlines()
    i = next(i for i, line in enumerate(lines) if "python3 benchmarks/device/plan.py" in line)
    plan = lines[i] + lines[i + 1]  # the command and its continuation line
    assert '"$(until_stop $margin)"' in plan and '--deadline "$deadline"' in plan
    assert "--budget-s" not in plan
    # No JAX start just to print the devices: the JSON's machine block has them.
    assert "jax.devices()" not in script
