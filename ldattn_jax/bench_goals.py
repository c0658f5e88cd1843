"""Issue 6's speed goals checked against measured benchmark JSON.

Run:
  python -m ldattn_jax.bench_goals benchmarks/results/<device>_<date>*.json [--json OUT]

Reads what ``python -m ldattn_jax.benchmark``, ``benchmarks/device/plan.py``
and ``benchmarks/torch_vs_jax.py`` write, and prints one markdown row per goal
(goal, target, measured, verdict, file), ready for ``benchmarks/README.md``.
Goals are stated for one H100 at 398/224 in bf16; an H200 has the H100's
compute (its memory is larger and faster), so its rows are judged too and the
device is named. Rows from a CPU, from another GPU (an A100 is no H100),
from a ``--smoke`` plan, or (training rates, ours / timm) from more than one
device are shown as ``recorded`` (figures, no verdict). Only the default
conv form of the platform counts (``LDATTN_STENCILS=auto``); a goal with no
matching row is ``not measured``.

Of several rows for one goal the best is shown, taken from those closest to
the goal's setting: 398/224 in bf16 (training), the paper model, 8 threads
and H.264 (predict), four-frame 398 px stacks (loader). A row of another
setting is shown with that setting named, and never judged (``incomplete`` on
a GPU). So pass the files of one run, or of the code you mean: the best of
old and new code is neither.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from data_prep import cli
from ldattn_jax import json_out

GEOMETRY = "398/224"
DTYPE = "bfloat16"
# The targets, as issue 6 states them.
TRAIN_RATE = {128: 1000.0, 32: 700.0}  # lda_st images/s
TIMM_RATIO = 1.2  # ours / timm legacy_xception images/s
STEP_RATIO = 1.15  # lda_st step time / xception step time
LOADER_PER_CORE = 500.0  # four-frame stacks/s
LOADER_SHAPE = [4, 398, 398, 3]  # the goal's stack: frames_shape of a loader row
PREDICT_S = 1.0  # s per 10-s 1080p video
PREDICT_THREADS = 8
# Devices the goals are stated for (one H100; an H200 has its compute), as a
# substring of jax's device_kind.
GOAL_DEVICES = ("H100", "H200")
# H.264 as a video's codec tag reads ('h264' from our clip, 'avc1' from most .mp4).
H264_TAGS = ("h264", "avc1")


# The fields the goals read from each row (a row with 'error' failed: exempt).
REQUIRED = {
    "train": ("variant", "batch", "dtype", "step_s", "images_per_s"),
    "side_by_side": ("batch", "ratio", "ours", "timm"),
    "loader": ("encoding", "workers"),
    "predict": ("workers", "total_s", "decode_s", "model_s"),
}


def _check_layout(path: str, doc: dict) -> None:
    """A ValueError naming the file and the section / row that is not a result's."""
    hint = "is this a result of python -m ldattn_jax.benchmark?"
    machine = doc["machine"]
    if not isinstance(machine, dict) or "platform" not in machine:
        raise ValueError(f"{path}: 'machine' is not a machine record (no 'platform'); {hint}")
    for section in ("train", "eval", "side_by_side", "loader", "predict", "loop"):
        rows = doc[section]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: '{section}' is not a list of rows; {hint}")
        for i, row in enumerate(rows):
            missing = [k for k in REQUIRED.get(section, ()) if k not in row]
            if missing and "error" not in row:
                raise ValueError(f"{path}: {section}[{i}] lacks {missing}; {hint}")


def load(paths: list[str]) -> list[dict]:
    """Each file as {'path', 'machine', 'geometry', 'train', 'eval', 'side_by_side',
    'loader', 'predict', 'loop', 'smoke', 'note'}; a section the file lacks is []."""
    docs = []
    for path in paths:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:  # ValueError: bad JSON, or not UTF-8 text
            raise ValueError(f"{path}: not a readable benchmark JSON ({e})") from e
        if not isinstance(raw, dict) or "machine" not in raw:
            raise ValueError(f"{path}: no 'machine' key; is this a benchmark result?")
        predict = raw.get("predict", [])
        if isinstance(predict, dict) and "workers" not in predict:  # session 1's: one thread
            predict = [dict(predict, workers=1)]
        side = list(raw.get("side_by_side", []))
        if "rows" in raw and "torch" in raw:  # torch_vs_jax.py's layout
            side += [
                dict(r, size=raw["size"], dtype=raw["dtype"], torch_device=raw.get("torch_device"))
                for r in raw["rows"]
            ]
        docs.append(
            {
                "path": path,
                "machine": raw["machine"],
                "geometry": raw.get("geometry"),
                "train": raw.get("train", []),
                "eval": raw.get("eval", []),
                "side_by_side": side,
                "loader": raw.get("loader", []),
                "predict": predict,
                "loop": raw.get("loop", []),
                "smoke": bool(raw.get("smoke")),  # plan.py --smoke: tiny sizes, no result
                # A caveat written into the file afterwards (rows measured beside
                # another job, superseded by a re-run): bench_diff prints it.
                "note": raw.get("note"),
            }
        )
        _check_layout(path, docs[-1])
    return docs


def _default_form(doc: dict, row: dict) -> bool:
    """Whether ``row`` ran the platform's default conv form (stencils on CPU only)."""
    stencils = row.get("stencils", doc["machine"].get("stencils"))
    return stencils == (doc["machine"]["platform"] == "cpu")


def _train_rows(docs: list[dict], variant: str, batch: int) -> list[tuple[dict, dict]]:
    """``variant``'s rows at ``batch`` in the platform's default conv form.

    Those at the goals' setting (398/224, bf16) where there are any, else every
    setting (a 2-core CPU records the 62/56 geometry): ``_setting_note`` names it.
    """
    rows = [
        (d, r)
        for d in docs
        for r in d["train"]
        if "error" not in r and r["variant"] == variant and r["batch"] == batch
        and _default_form(d, r)
    ]  # fmt: skip
    return [(d, r) for d, r in rows if _at_goal_setting(r)] or rows


def _at_goal_setting(row: dict) -> bool:
    return row.get("geometry") == GEOMETRY and row["dtype"] == DTYPE


def _setting_note(row: dict) -> str:
    """'' for a row at the goals' setting, else ' (62/56, float32)': what it measured."""
    return "" if _at_goal_setting(row) else f" ({row.get('geometry')}, {row['dtype']})"


def _best(rows: list[tuple[dict, dict]], key: str, high: bool = True):
    """The (doc, row) with the best ``key`` (several files may hold the same setting)."""
    if not rows:
        return None
    return (max if high else min)(rows, key=lambda dr: dr[1][key])


def _device(doc: dict) -> str:
    m = doc["machine"]
    if m["platform"] == "cpu":
        return f"CPU ({m.get('host_cpu_model', 'model not recorded')}, {m['host_cpu_cores']} cores)"
    return f"{m['device_kind']} x{m['device_count']}"


def timm_mode(row: dict) -> str:
    """torch.compile's mode of a side-by-side row's timm run ('default' before
    rows recorded it: the only mode then)."""
    return (row.get("timm") or {}).get("compile_mode") or "default"


def _verdict(doc: dict, ok: bool | None, one_device: bool = False, absolute: bool = False) -> str:
    """met / MISSED, or why there is no verdict: a CPU, a smoke run, another
    GPU than the goals', more than one device for a per-GPU goal (``one_device``),
    or None: the row is not the goal's setting.

    ``absolute``: a rate or time, not a ratio of two runs on one device. The
    goals name an H100; an H200 has its compute but ~1.4x its memory bandwidth
    (4.8 vs 3.35 TB/s), which a step of depthwise convolutions and BatchNorm
    at ~10% of peak compute feels, so such a verdict says which GPU earned it."""
    m = doc["machine"]
    if m["platform"] == "cpu":
        return "recorded (CPU)"
    if doc.get("smoke"):
        return "recorded (smoke run)"
    if not any(k.lower() in m.get("device_kind", "").lower() for k in GOAL_DEVICES):
        return "recorded (not an H100/H200)"
    if one_device and m.get("device_count", 1) != 1:
        return f"recorded ({m.get('device_count')} devices; the goal is one GPU)"
    if ok is None:
        return "incomplete"
    verdict = "met" if ok else "MISSED"
    if absolute and "h200" in m.get("device_kind", "").lower():
        verdict += " (on an H200; the goal is an H100's)"
    return verdict


def _row(
    goal: str, target: str, doc, measured, ok, one_device: bool = False, absolute: bool = False
) -> dict:
    """A goal's table row; ``doc`` is the file the number came from (None: no row)."""
    if doc is None:
        return {"goal": goal, "target": target, "measured": "-", "verdict": "not measured",
                "device": "-", "file": "-"}  # fmt: skip
    return {
        "goal": goal,
        "target": target,
        "measured": measured,
        "verdict": _verdict(doc, ok, one_device, absolute),
        "device": _device(doc),
        "file": Path(doc["path"]).name,
    }


def evaluate(docs: list[dict]) -> list[dict]:
    """One row per goal: goal, target, measured, verdict, device, file."""
    out = []
    lda_rate = {}
    for batch, target in TRAIN_RATE.items():
        best = _best(_train_rows(docs, "lda_st", batch), "images_per_s")
        goal = f"lda_st train, batch {batch}"
        if best is None:
            out.append(_row(goal, f">= {target:.0f} img/s", None, None, None))
            continue
        d, r = best
        # Another setting (geometry, dtype) is shown with its name, never judged.
        ok = r["images_per_s"] >= target if _at_goal_setting(r) else None
        if ok is not None:
            lda_rate[batch] = r["images_per_s"]  # per GPU only where one device ran it
        text = f"{r['images_per_s']:.0f} img/s{_setting_note(r)}"
        out.append(
            _row(goal, f">= {target:.0f} img/s", d, text, ok, one_device=True, absolute=True)
        )
    for batch in sorted(TRAIN_RATE, reverse=True):
        goal = f"ours / timm legacy_xception, batch {batch}"
        rows = [
            (d, r) for d in docs for r in d["side_by_side"]
            if r["batch"] == batch and r.get("dtype") == DTYPE and r.get("size") == 398
        ]  # fmt: skip
        # The run where timm was fastest, in whichever torch.compile mode: a
        # reduce-overhead run beside a default-mode one is what timm's users can
        # have, and the verdict must not come from timm at its slowest.
        best = max(rows, key=lambda dr: dr[1]["timm"]["images_per_s"]) if rows else None
        if best is None:
            out.append(_row(goal, f">= {TIMM_RATIO}x", None, None, None))
            continue
        d, r = best
        text = (
            f"{r['ratio']:.2f}x ({r['ours']['images_per_s']:.0f} vs "
            f"{r['timm']['images_per_s']:.0f} img/s, torch.compile mode {timm_mode(r)})"
        )
        # timm trains on one GPU: ours on several would flatter the ratio, and
        # timm on the CPU (--allow-cpu, a CPU-only torch) is no comparison.
        ok = r["ratio"] >= TIMM_RATIO if r.get("torch_device") != "cpu" else None
        if ok is None:
            text += " (timm on the CPU)"
        out.append(_row(goal, f">= {TIMM_RATIO}x", d, text, ok, one_device=True))
    for batch in sorted(TRAIN_RATE, reverse=True):
        goal = f"lda_st step / xception step, batch {batch}"
        # Both from one file (one machine, one run) and one setting, else the
        # ratio compares machines or dtypes.
        pairs = []
        for d in docs:
            lda, xc = _train_rows([d], "lda_st", batch), _train_rows([d], "xception", batch)
            for _, r in lda:
                same = [x for _, x in xc if _setting_note(x) == _setting_note(r)]
                if same:
                    fastest = min(x["step_s"] for x in same)
                    pairs.append((d, dict(r, ratio=r["step_s"] / fastest)))
        pairs = [(d, r) for d, r in pairs if _at_goal_setting(r)] or pairs
        best = _best(pairs, "ratio", high=False)
        if best is None:
            out.append(_row(goal, f"<= {STEP_RATIO}x", None, None, None))
            continue
        d, r = best
        ok = r["ratio"] <= STEP_RATIO if _at_goal_setting(r) else None
        out.append(_row(goal, f"<= {STEP_RATIO}x", d, f"{r['ratio']:.2f}x{_setting_note(r)}", ok))
    # Per core = per CPU-second the loader used (its workers and the consuming
    # loop included). Files from before session 5 only have the rate per
    # worker process, which overstates it (4 read threads): used, and named
    # as such, only when no file has the CPU-second figure.
    raw = [(d, r) for d in docs for r in d["loader"] if r["encoding"] == "raw"]
    # The goal's stacks (four 398 px frames) where any row has them: a smaller
    # stack (a --smoke plan's 62 px) reads many times faster.
    raw = [(d, r) for d, r in raw if _loader_shape(r) == LOADER_SHAPE] or raw
    loader = [(d, dict(r, per_core=r["stacks_per_cpu_s"])) for d, r in raw
              if r.get("stacks_per_cpu_s")] or [
        (d, dict(r, per_core=r["stacks_per_s_per_core"])) for d, r in raw
    ]  # fmt: skip
    best = _best(loader, "per_core")
    target = f">= {LOADER_PER_CORE:.0f} stacks/s per core"
    if best is None:
        out.append(_row("loader (raw shards)", target, None, None, None))
    else:
        d, r = best
        rate = r["per_core"]
        unit = "per CPU-second" if r.get("stacks_per_cpu_s") else "per worker process"
        threads = f" x {r['read_threads']} read threads" if r.get("read_threads") else ""
        text = f"{rate:.0f} /s {unit} ({r['workers']} grain workers{threads})"
        at_goal = _loader_shape(r) == LOADER_SHAPE
        if not at_goal:
            text += f" ({'x'.join(map(str, _loader_shape(r) or ['?']))} stacks)"
        if 128 in lda_rate:  # what the goal is for: cores to keep the GPU fed
            text += f"; {lda_rate[128] / rate:.1f} cores feed lda_st b128"
        ok = rate >= LOADER_PER_CORE if at_goal else None
        out.append(_row("loader (raw shards)", target, d, text, ok))
    out.append(_predict_row(docs))
    return out


def _loader_shape(row: dict) -> list | None:
    """A loader row's stack shape; rows from before it was recorded were 398 px."""
    return list(row["frames_shape"]) if row.get("frames_shape") else LOADER_SHAPE


def _predict_geometry(doc: dict, row: dict) -> str | None:
    """The model geometry a predict row ran ('398/224'); older rows take the file's."""
    if row.get("geometry"):
        return row["geometry"]
    return {"paper": GEOMETRY}.get(doc.get("geometry"), doc.get("geometry"))


def _codec(row: dict) -> str:
    """The codec tag that ends a row's video description ('..., 30 fps, h264'), or ''."""
    return row["video"].rsplit(", ", 1)[-1] if row.get("video") else ""


def _is_h264(row: dict) -> bool:
    return _codec(row).lower() in H264_TAGS


def predict_cores(doc: dict, row: dict) -> int | None:
    """The cores a predict row ran on: its ``cpu_cores`` (benchmark pins each row
    to as many as it has threads), else the whole host's (older rows were not
    pinned: FFmpeg's decode threads used every core)."""
    return row.get("cpu_cores") or doc["machine"].get("host_cpu_cores")


def _predict_row(docs: list[dict]) -> dict:
    """Goal 5's row: the fastest of the rows that are closest to the goal's setting.

    Narrowed step by step, each step only where some row survives it: the
    paper geometry (the goal's model), the goal's core count, and H.264
    (the datasets' codec; an mp4v clip decodes ~2x faster and flatters).
    """
    goal = f"predict, 10-s 1080p video (GPU + {PREDICT_THREADS} cores)"
    target = f"<= {PREDICT_S:.0f} s"
    rows = [(d, r) for d in docs for r in d["predict"]]
    for keep in (
        lambda d, r: _predict_geometry(d, r) == GEOMETRY,
        lambda d, r: predict_cores(d, r) == PREDICT_THREADS,
        lambda d, r: (predict_cores(d, r) or PREDICT_THREADS + 1) <= PREDICT_THREADS,  # judgeable
        lambda d, r: _is_h264(r),
    ):
        rows = [(d, r) for d, r in rows if keep(d, r)] or rows
    best = _best(rows, "total_s", high=False)
    if best is None:
        return _row(goal, target, None, None, None)
    d, r = best
    geometry = _predict_geometry(d, r)
    cores = predict_cores(d, r)
    setting = [f"{r['workers']} threads on {cores or '?'} cores"]
    if _codec(r):
        setting.append(_codec(r))
    if r.get("dtype"):  # predict --dtype; the goals assume bf16, any dtype may meet them
        setting.append(r["dtype"])
    if geometry != GEOMETRY:
        setting.append(f"{geometry or 'unrecorded'} model")
    text = (
        f"{r['total_s']:.2f} s ({', '.join(setting)}; decode {r['decode_s']:.2f}, "
        f"model {r['model_s']:.2f})"
    )
    # A row on more cores than the goal's (which a fast time owes to them),
    # another model, or a clip that is not H.264 (mp4v decodes ~2x faster) says
    # nothing either way; one on fewer cores that meets it meets it.
    complete = (
        cores is not None and cores <= PREDICT_THREADS and geometry == GEOMETRY and _is_h264(r)
    )
    ok = r["total_s"] <= PREDICT_S if complete else None
    return _row(goal, target, d, text, ok, absolute=True)


def markdown(rows: list[dict]) -> str:
    cols = ["goal", "target", "measured", "verdict", "device", "file"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.bench_goals", description=__doc__)
    p.add_argument("files", nargs="+", help="benchmark JSON files (any of the three layouts)")
    p.add_argument("--json", default="", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    try:
        rows = evaluate(load(args.files))
    except ValueError as e:
        p.error(str(e))
    print(markdown(rows))
    problem = args.json and json_out.write(args.json, rows)
    if problem:
        print(f"bench_goals: error: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
