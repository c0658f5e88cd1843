"""Two benchmark runs side by side: which measurements got faster, which slower.

Run:
  python -m ldattn_jax.bench_diff --base OLD.json [...] --new NEW.json [...]
      [--tolerance FRACTION] [--json OUT]

Issue 6 asks the 2-core CPU figures to be recorded "so regressions show";
this is where they show. Rows of the two runs are paired by their setting
(variant, batch, dtype, geometry, ... per section) and each measurement is
compared as new / old: ``better`` or ``WORSE`` when it moved by more than
``--tolerance`` (a fraction), else ``same``. The default is 0.25 on a CPU:
the same code's training rates on our 2-vCPU VM moved by up to 20% between
runs an hour apart (session 17); 0.10 elsewhere (an accelerator's step times
are steadier, not measured here). A measurement that failed in one run
(a row with ``error``, e.g. out of memory) counts as WORSE or better.

Both runs must come from one machine (platform, device kind and count, CPU
model, id and cores; a field only one run recorded is named): across
machines a ratio mixes hardware with code, so the rows are shown without a
verdict. Differing jax/flax/python versions are named, since they are a
cause, not a reason to refuse. Several files per side are read in order, a
later file's row replacing an earlier one's at the same setting (a re-run
after a fix supersedes the first run).

Exit status: 0, or 1 when a measurement got WORSE on the same machine (for
scripts), 2 on unreadable input.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from data_prep import cli
from ldattn_jax import bench_goals, json_out

HIGH, LOW = "higher", "lower"  # which direction is better
# Per section: the fields that name a row's setting, and the measurements
# compared (name, better direction). Deterministic or rate-like only: a loop's
# input-wait share of a few percent would "double" on noise.
SECTIONS = {
    "train": (
        ("variant", "batch", "dtype", "geometry", "stencils"),
        (("images_per_s", HIGH), ("compile_s", LOW), ("step_memory_bytes", LOW),
         ("peak_device_memory_bytes", LOW)),
    ),
    "eval": (
        ("variant", "batch", "dtype", "geometry", "stencils"),
        (("images_per_s", HIGH), ("first_call_s", LOW)),
    ),
    "loader": (
        ("encoding", "batch", "workers", "read_threads", "frames_shape"),
        (("stacks_per_s", HIGH), ("stacks_per_cpu_s", HIGH)),
    ),
    "predict": (
        ("video", "variant", "dtype", "geometry", "frames_per_video", "workers", "stencils",
         "cpu_cores"),
        (("total_s", LOW), ("decode_s", LOW), ("faces_s", LOW), ("model_s", LOW)),
    ),
    "loop": (("variant", "batch", "dtype", "geometry", "worker_count", "read_threads"),
             (("images_per_s", HIGH),)),
    "side_by_side": (("batch", "size", "dtype", "compile_mode"), (("ratio", HIGH),)),
}  # fmt: skip
# A result file's --geometry name, as rows label a geometry (backbone/attention
# px of configs/demo.py and configs/ffpp.py; a test keeps them in step). Rows
# of eval and of old predict runs carry no geometry of their own.
GEOMETRY_LABELS = {"demo": "62/56", "paper": "398/224"}
MACHINE_FIELDS = ("platform", "device_kind", "device_count", "process_count",
                  "host_cpu_model", "host_cpu_cores", "host_cpu_id")  # fmt: skip
VERSION_FIELDS = ("python", "jax", "flax")
# Fields shown as name=value in a setting; the others are self-explaining.
NAMED = {"batch", "workers", "read_threads", "worker_count", "frames_per_video", "size",
         "stencils", "frames_shape"}  # fmt: skip
# Default --tolerance by the new run's platform (see the module docstring).
DEFAULT_TOLERANCE = {"cpu": 0.25}
OTHER_TOLERANCE = 0.10


def _setting(section: str, doc: dict, row: dict) -> tuple:
    """The row's setting as a hashable tuple of (field, value)."""
    out = []
    for field in SECTIONS[section][0]:
        value = row.get(field)
        if field == "geometry":
            value = value or doc.get("geometry")
            value = GEOMETRY_LABELS.get(value, value)
        elif field == "stencils" and value is None:
            value = doc["machine"].get("stencils")
        elif field == "cpu_cores":  # rows before pinning ran on the whole host
            value = bench_goals.predict_cores(doc, row)
        elif field == "compile_mode":  # timm's torch.compile mode, in its half of the row
            value = bench_goals.timm_mode(row)
        elif field == "dtype" and value is None and section == "predict":
            value = "float32"  # `benchmark predict` ran float32 before --dtypes (session 12)
        out.append((field, tuple(value) if isinstance(value, list) else value))
    return tuple(out)


def describe(setting: tuple) -> str:
    """'xception batch=8 float32 62/56': a setting as a table cell."""
    return " ".join(f"{k}={v}" if k in NAMED else str(v) for k, v in setting if v is not None)


def machine_of(docs: list[dict], side: str) -> dict:
    """The one machine ``docs`` ran on, with every field any of them recorded;
    a ValueError naming two files that disagree on one."""
    known: dict[str, tuple] = {}  # field -> (value, the doc that recorded it)
    for doc in docs:
        for field in MACHINE_FIELDS:
            value = doc["machine"].get(field)
            if value is None:
                continue  # not recorded (host_cpu_id before session 17): no conflict
            seen, other = known.setdefault(field, (value, doc))
            if seen != value:
                raise ValueError(
                    f"the {side} files ran on different machines ({field}: "
                    f"{Path(other['path']).name} {seen!r}, {Path(doc['path']).name} {value!r}): "
                    "compare one machine at a time"
                )
    return dict(docs[-1]["machine"], **{f: v for f, (v, _) in known.items()})


def _machine_text(m: dict) -> str:
    if m.get("platform") == "cpu":
        cpu_id = f" ({m['host_cpu_id']})" if m.get("host_cpu_id") else ""
        return f"CPU {m.get('host_cpu_model')}{cpu_id}, {m.get('host_cpu_cores')} cores"
    return f"{m.get('device_kind')} x{m.get('device_count')}, {m.get('host_cpu_cores')} CPU cores"


def rows_by_setting(docs: list[dict], section: str) -> dict[tuple, dict]:
    """{setting: row}; a later file's row replaces an earlier one's."""
    out = {}
    for doc in docs:
        for row in doc[section]:
            out[_setting(section, doc, row)] = row
    return out


def _verdict(ratio: float, direction: str, tolerance: float) -> str:
    gain = ratio if direction == HIGH else 1.0 / ratio  # > 1: better
    if gain > 1.0 + tolerance:
        return "better"
    if gain < 1.0 / (1.0 + tolerance):
        return "WORSE"
    return "same"


def _row(section: str, setting: tuple, metric: str, direction: str) -> dict:
    return {"section": section, "setting": describe(setting), "metric": metric,
            "better": direction, "base": None, "new": None, "ratio": None}  # fmt: skip


def _failed(section, setting, base: dict, new: dict, verdicts: bool) -> dict:
    """The one row of a setting that failed (``error``) in either run."""
    metric, direction = SECTIONS[section][1][0]
    out = _row(section, setting, metric, direction)
    if "error" in base and "error" in new:
        out["verdict"] = "failed in both"
        return out
    failed, verdict = (new, "WORSE") if "error" in new else (base, "better")
    out["error"] = f"{'new' if failed is new else 'base'} run failed: {failed['error']}"
    out["verdict"] = verdict if verdicts else "no verdict"
    return out


def _compare(section, setting, metric, direction, base, new, tolerance, verdicts) -> dict | None:
    """One measurement's row, or None where a run lacks it (peak memory on a CPU)."""
    b, n = base.get(metric), new.get(metric)
    if b is None or n is None or b <= 0 or n <= 0:
        return None
    out = dict(_row(section, setting, metric, direction), base=b, new=n, ratio=n / b)
    out["verdict"] = _verdict(n / b, direction, tolerance) if verdicts else "no verdict"
    return out


def diff(base_docs: list[dict], new_docs: list[dict], tolerance: float | None = None) -> dict:
    """{'base_machine', 'new_machine', 'same_machine', 'versions', 'rows', 'only_base',
    'only_new', ...}; ``tolerance`` None: the platform's default."""
    base_m, new_m = machine_of(base_docs, "base"), machine_of(new_docs, "new")
    if tolerance is None:
        tolerance = DEFAULT_TOLERANCE.get(new_m.get("platform"), OTHER_TOLERANCE)
    if not (math.isfinite(tolerance) and tolerance >= 0):  # NaN compares False: all "same"
        raise ValueError(f"--tolerance {tolerance}: a finite fraction >= 0 (0.25 = 25%)")
    # A field one run did not record (host_cpu_id before session 17) is unknown,
    # not different: it is named instead.
    unrecorded = [f for f in MACHINE_FIELDS if (base_m.get(f) is None) != (new_m.get(f) is None)]
    same = all(base_m.get(f) == new_m.get(f) for f in MACHINE_FIELDS if f not in unrecorded)
    smoke = any(d.get("smoke") for d in base_docs + new_docs)
    verdicts = same and not smoke
    versions = {f: [base_m.get(f), new_m.get(f)] for f in VERSION_FIELDS
                if base_m.get(f) != new_m.get(f)}  # fmt: skip
    rows, only_base, only_new = [], [], []
    for section, (_, metrics) in SECTIONS.items():
        base, new = rows_by_setting(base_docs, section), rows_by_setting(new_docs, section)
        only_base += [f"{section}: {describe(s)}" for s in base if s not in new]
        only_new += [f"{section}: {describe(s)}" for s in new if s not in base]
        for setting in (s for s in base if s in new):
            b, n = base[setting], new[setting]
            if "error" in b or "error" in n:
                rows.append(_failed(section, setting, b, n, verdicts))
                continue
            for metric, direction in metrics:
                row = _compare(section, setting, metric, direction, b, n, tolerance, verdicts)
                if row is not None:
                    rows.append(row)
    return {
        "base_machine": _machine_text(base_m),
        "new_machine": _machine_text(new_m),
        "same_machine": same,
        "unrecorded": unrecorded,
        "smoke": smoke,
        "tolerance": tolerance,
        "versions": versions,
        "notes": [
            f"{Path(d['path']).name}: {d['note']}" for d in base_docs + new_docs if d.get("note")
        ],  # fmt: skip
        "rows": rows,
        "only_base": only_base,
        "only_new": only_new,
    }


def _num(x, metric: str) -> str:
    if x is None:
        return "-"
    if metric.endswith("_bytes"):
        return f"{x / 2**30:.2f} GiB"
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def render(result: dict) -> str:
    """The comparison as text: a header, a markdown table, what was not compared."""
    lines = []
    if result["same_machine"]:
        lines.append(f"machine: {result['new_machine']}")  # the newer run records more
    else:
        lines.append(
            f"machines differ: base {result['base_machine']}, new {result['new_machine']}; "
            "ratios mix hardware with code, so no verdicts"
        )
    if result["unrecorded"]:
        lines.append(
            f"recorded by one run only: {', '.join(result['unrecorded'])}; the machines may "
            "differ in it"
        )
    lines += [f"note in {n}" for n in result["notes"]]
    if result["smoke"]:
        lines.append("a --smoke plan is among the files: tiny sizes, so no verdicts")
    for f, (b, n) in result["versions"].items():
        lines.append(f"{f}: {b} -> {n}")
    tol = result["tolerance"]
    lines += [
        f"better / WORSE: moved by more than {100 * tol:.0f}% (--tolerance {tol}); same: within it",
        "",
        "| section | setting | measurement | base | new | new/base | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        verdict = r["verdict"] + (f": {r['error']}" if "error" in r else "")
        base, new = _num(r["base"], r["metric"]), _num(r["new"], r["metric"])
        lines.append(
            f"| {r['section']} | {r['setting']} | {r['metric']} ({r['better']} is better) | "
            f"{base} | {new} | {ratio} | {verdict} |"
        )
    verdicts = [r["verdict"] for r in result["rows"]]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("better", "WORSE", "same"))
    lines += ["", f"{len(verdicts)} compared: {counts}"]
    worse = [f"{r['section']} {r['setting']} {r['metric']}" for r in result["rows"]
             if r["verdict"] == "WORSE"]  # fmt: skip
    if worse:
        lines.append("WORSE: " + "; ".join(worse))
    for side in ("base", "new"):
        only = [s.split(":")[0] for s in result[f"only_{side}"]]
        if only:
            per = ", ".join(f"{sec} {only.count(sec)}" for sec in dict.fromkeys(only))
            lines.append(f"settings only in {side}, not compared: {per} (listed in --json)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.bench_diff", description=__doc__)
    p.add_argument("--base", nargs="+", required=True, help="the earlier run's JSON files")
    p.add_argument("--new", nargs="+", required=True, help="the later run's JSON files")
    p.add_argument(
        "--tolerance", type=float, default=None,
        help="a change larger than this fraction gets a verdict (default: 0.25 on a CPU, "
        "0.10 on an accelerator)",
    )  # fmt: skip
    p.add_argument("--json", default="", help="also write the comparison as JSON here")
    args = p.parse_args(argv)
    try:
        result = diff(bench_goals.load(args.base), bench_goals.load(args.new), args.tolerance)
    except ValueError as e:
        print(f"bench_diff: error: {e}", file=sys.stderr)
        return 2
    print(render(result))
    problem = args.json and json_out.write(args.json, result)
    if problem:
        print(f"bench_diff: error: {problem}", file=sys.stderr)
        return 2
    worse = result["same_machine"] and any(r["verdict"] == "WORSE" for r in result["rows"])
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
