"""Is detector B's AUC different from A's on the same videos? A paired bootstrap.

    python -m ldattn_jax.compare A B [--level video|frame] [--json OUT]

A and B are evaluate output directories (RUN/eval/<dataset>_<split>_<step>/)
or CSV files of another tool's scores of the same videos, with the columns
video_id, label (1 = fake), score (P(fake)), and frame_index for --level
frame. Rows are matched by video id (and frame index), never by order; both
must hold the same videos with the same labels. A CSV is UTF-8 (Excel's
byte-order mark is fine), its labels 0 or 1; a bad row is refused naming its
file and line, and bad input exits 2.

Two AUCs with overlapping intervals may still differ: both detectors meet the
same hard and easy videos, and a paired bootstrap (the same resamples for
both) cancels that shared part. So this prints each AUC with its own 95%
interval, then B - A with the paired interval and p-value
(``metrics.paired_auc_difference``). Frame level resamples whole videos.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys

import numpy as np

from data_prep import cli
from ldattn_jax import json_out, metrics

NEEDED = {
    "video": ("video_id", "label", "score"),
    "frame": ("video_id", "frame_index", "label", "score"),
}
EVAL_FILE = {"video": "video_scores.csv", "frame": "scores.csv"}


class CompareError(ValueError):
    """The two score sets cannot be compared; the message says why and what to do."""


def _read_text(path: str) -> str:
    """The CSV's text. utf-8-sig: Excel saves a byte-order mark first, which
    would otherwise become part of the first column's name."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CompareError(f"{path} cannot be read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CompareError(
            f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}): save the CSV as UTF-8"
        ) from None


def _number(row: dict, column: str, where: str) -> float:
    try:
        return float(row[column])
    except ValueError:
        raise CompareError(f"{where}: {column} {row[column]!r} is not a number") from None


def _label(row: dict, where: str) -> int:
    """0 or 1; 1.0 too (another tool may write floats), not 0.5, 2 or -1."""
    value = _number(row, "label", where)
    if value not in (0.0, 1.0):
        raise CompareError(
            f"{where}: label {row['label']!r} is neither 0 (real) nor 1 (fake): write each "
            "video's true class, not a score"
        )
    return int(value)


def _score(row: dict, where: str) -> float:
    """A finite number: another tool may write nan or inf for a video it could
    not score, which would otherwise fail later in the metrics without a line."""
    value = _number(row, "score", where)
    if not np.isfinite(value):
        raise CompareError(
            f"{where}: score {row['score']!r} is not a finite number: give the video a "
            "score (e.g. what that tool reports for a video it could not score) or drop it "
            "from both files"
        )
    return value


def _frame(row: dict, where: str) -> str:
    """The frame index as text: 12 and 12.0 are one frame (another tool's
    CSV may write either); 12.5 is none."""
    value = _number(row, "frame_index", where)
    if not value.is_integer():
        raise CompareError(f"{where}: frame_index {row['frame_index']!r} is not a whole number")
    return str(int(value))


def _entry(row: dict, level: str, width: int, where: str) -> tuple[tuple, tuple[int, float]]:
    """(key, (label, score)) of one CSV row of a header ``width`` fields wide."""
    # csv fills a short row's missing fields with None and keys a long row's
    # extra ones under None.
    if None in row or None in row.values():
        n = sum(v is not None for k, v in row.items() if k is not None)
        n += len(row.get(None) or ())
        raise CompareError(f"{where}: the row has {n} field(s), the header {width}")
    if not row["video_id"].strip():
        raise CompareError(f"{where}: the video_id is empty; every row needs its video's id")
    frame = (_frame(row, where),) if level == "frame" else ()
    return (row["video_id"], *frame), (_label(row, where), _score(row, where))


def read_scores(path: str, level: str) -> dict[tuple, tuple[int, float]]:
    """{key: (label, score)} of an evaluate directory or a CSV; key = (video_id,) or
    (video_id, frame_index)."""
    if os.path.isdir(path):
        path = os.path.join(path, EVAL_FILE[level])
    if not os.path.isfile(path):
        raise CompareError(f"{path} not found: pass an evaluate output directory or a CSV file")
    if path.lower().endswith(".json"):  # metrics.json holds no per-video scores
        raise CompareError(
            f"{path} is JSON: pass the evaluate directory or its scores CSV "
            f"({EVAL_FILE['video']}, or {EVAL_FILE['frame']} for --level frame)"
        )
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    fields = reader.fieldnames or []
    missing = [c for c in NEEDED[level] if c not in fields]
    if missing:
        raise CompareError(
            f"{path} lacks the column(s) {missing} that --level {level} needs "
            f"({', '.join(NEEDED[level])})"
        )
    out = {}
    for line, row in enumerate(reader, start=2):
        key, value = _entry(row, level, len(fields), f"{path}:{line}")
        if key in out:
            hint = " (one row per frame? pass --level frame)" if level == "video" else ""
            raise CompareError(
                f"{path}:{line}: {'/'.join(key)} appears twice; ids must be unique{hint}"
            )
        out[key] = value
    if not out:
        raise CompareError(f"{path} has no rows")
    return out


def _some(keys) -> str:
    return ", ".join("/".join(k) for k in sorted(keys)[:3])


def paired_arrays(a: dict, b: dict, names: tuple[str, str]) -> tuple[np.ndarray, ...]:
    """(labels, scores_a, scores_b, video ids) over the keys both hold; raises if
    they hold different keys or disagree on a label."""
    only_a, only_b = a.keys() - b.keys(), b.keys() - a.keys()
    if only_a or only_b:
        raise CompareError(
            f"{names[1]} lacks {len(only_a)} of {names[0]}'s {len(a)} entries (e.g. "
            f"{_some(only_a) or '-'}) and {names[0]} lacks {len(only_b)} of {names[1]}'s "
            f"(e.g. {_some(only_b) or '-'}): compare scores of the same videos (the same "
            "split and build, or an external tool's scores of exactly those videos)"
        )
    keys = sorted(a)
    clash = [k for k in keys if a[k][0] != b[k][0]]
    if clash:
        k = clash[0]
        raise CompareError(
            f"{len(clash)} entries have other labels in {names[0]} and {names[1]}, e.g. "
            f"{'/'.join(k)}: {a[k][0]} vs {b[k][0]} (1 must be fake in both; Celeb-DF's own "
            "test list uses 1 = real)"
        )
    labels = np.array([a[k][0] for k in keys])
    return (
        labels,
        np.array([a[k][1] for k in keys]),
        np.array([b[k][1] for k in keys]),
        np.array([k[0] for k in keys]),
    )


def run_of(path: str) -> dict | None:
    """What made an evaluate directory's scores (its metrics.json, beside a CSV
    too): model, step, dtype, the weights' and the shards' hashes, the code.
    None for another tool's CSV, or a metrics.json that cannot be read."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    try:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            doc = json.load(f)
        checkpoint = doc.get("checkpoint") or {}
        prov = doc.get("provenance") or {}
        return {
            "model": doc.get("model"),
            "step": checkpoint.get("step"),
            "compute_dtype": doc.get("compute_dtype"),
            "state_sha256": checkpoint.get("state_sha256"),
            "shards_sha256": doc.get("shards_sha256"),
            # Absent in metrics.json files written before versions were recorded.
            "shards_fingerprint_version": doc.get("shards_fingerprint_version", 1),
            "git_commit": prov.get("git_commit"),
            "git_dirty": prov.get("git_dirty"),
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def notes(run_a: dict | None, run_b: dict | None) -> list[str]:
    """What a reader of B - A should know about where the two score sets came from."""
    if run_a is None or run_b is None:
        return []
    out = []
    same = run_a["state_sha256"] is not None and run_a["state_sha256"] == run_b["state_sha256"]
    if same:
        how = (
            f"in {run_a['compute_dtype']} and {run_b['compute_dtype']}"
            if run_a["compute_dtype"] != run_b["compute_dtype"]
            else "in the same dtype"
        )
        out.append(
            f"A and B are the same weights (state sha256 {run_a['state_sha256'][:12]}…) {how}: "
            "a difference is not one of training"
        )
    versions = (
        run_a.get("shards_fingerprint_version", 1),
        run_b.get("shards_fingerprint_version", 1),
    )
    if None in (run_a["shards_sha256"], run_b["shards_sha256"]):
        pass
    elif versions[0] != versions[1]:
        # One build has another fingerprint in each version: unequal values say nothing.
        out.append(
            f"A and B record data fingerprints of different versions ({versions[0]} and "
            f"{versions[1]}; metrics.FINGERPRINT_VERSION): whether they scored the same build "
            "cannot be told from them"
        )
    elif run_a["shards_sha256"] != run_b["shards_sha256"]:
        out.append(
            "A and B scored other builds of these videos (shards_sha256 differ: other crops, "
            "size or frames): a difference may come from the data, not the detectors"
        )
    return out


def compare(path_a: str, path_b: str, level: str = "video") -> dict:
    a, b = read_scores(path_a, level), read_scores(path_b, level)
    labels, sa, sb, videos = paired_arrays(a, b, ("A", "B"))
    groups = videos if level == "frame" else None
    try:
        result = metrics.paired_auc_difference(labels, sa, sb, groups)
        ci_a, ci_b = (metrics.bootstrap_intervals(labels, s, groups) for s in (sa, sb))
    except ValueError as e:  # one class only, scores outside [0, 1], ...
        raise CompareError(str(e)) from None
    run_a, run_b = run_of(path_a), run_of(path_b)
    return metrics.to_jsonable(
        {
            "level": level,
            "a": path_a,
            "b": path_b,
            "run_a": run_a,
            "run_b": run_b,
            "notes": notes(run_a, run_b),
            "counts": {"real": int((labels == 0).sum()), "fake": int(labels.sum())},
            "videos": len(set(videos.tolist())),
            **result,
            # None where no resample varied and no exact bound exists (every score
            # tied); the notes say how an interval no resample varied was bounded.
            "auc_a_ci95": None if ci_a["auc"] is None else list(ci_a["auc"]),
            "auc_b_ci95": None if ci_b["auc"] is None else list(ci_b["auc"]),
            "auc_a_ci95_note": ci_a["auc_note"],
            "auc_b_ci95_note": ci_b["auc_note"],
        }
    )


def _run_line(run: dict | None) -> str:
    if run is None:
        return ""
    parts = [f"{run['model']} step {run['step']}", str(run["compute_dtype"])]
    if run["state_sha256"]:
        parts.append(f"weights {run['state_sha256'][:12]}…")
    if run["git_commit"]:
        parts.append(
            f"code {run['git_commit'][:7]}" + (" with changes" if run["git_dirty"] else "")
        )
    return "  (" + ", ".join(parts) + ")"


def _ci_text(ci, sign: str = "") -> str:
    return "[no interval]" if ci is None else f"[{ci[0]:{sign}.4f}, {ci[1]:{sign}.4f}]"


def _difference_line(r: dict) -> str:
    ci = r["delta_ci95"]
    excludes_zero = ci is not None and (ci[0] > 0 or ci[1] < 0)
    if r["p_value"] is None:
        # No resample varied (both AUCs perfect): no p-value; the interval, where
        # there is one, is that of the exact bounds of the two AUCs.
        verdict = (
            "the AUCs differ at 95% (exact bounds)"
            if excludes_zero
            else "cannot tell: the AUCs are not shown to differ"
        )
        return f"  B - A  {r['delta']:+.4f} {_ci_text(ci, '+')}  p = n/a: {verdict}"
    p = f"{r['p_value']:.3g}" if r["p_value"] >= 1e-4 else "< 1e-4"
    verdict = "differ" if excludes_zero else "are not shown to differ"
    return f"  B - A  {r['delta']:+.4f} {_ci_text(ci, '+')}  p = {p}: the AUCs {verdict} at 95%"


def format_result(r: dict) -> str:
    unit = "videos" if r["level"] == "video" else f"frames of {r['videos']} videos"
    width = max(len(r["a"]), len(r["b"]))
    notes = [
        *(
            f"{name}'s {n}"
            for name, n in (("A", r.get("auc_a_ci95_note")), ("B", r.get("auc_b_ci95_note")))
            if n
        ),
        *([r["note"]] if r.get("note") else []),
        *r.get("notes", ()),
    ]
    return "\n".join(
        [
            f"{r['level']} level: {r['counts']['real']} real + {r['counts']['fake']} fake "
            f"{unit}, {r['resamples']} paired resamples",
            *(
                f"  {name}  {path:<{width}}  AUC {auc:.4f} {_ci_text(ci)}" + _run_line(run)
                for name, path, auc, ci, run in (
                    ("A", r["a"], r["auc_a"], r["auc_a_ci95"], r.get("run_a")),
                    ("B", r["b"], r["auc_b"], r["auc_b_ci95"], r.get("run_b")),
                )
            ),
            _difference_line(r),
            *(f"  note: {n}" for n in notes),
        ]
    )


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.compare", description=__doc__.split("\n")[0])
    p.add_argument("a", help="evaluate output directory or CSV (video_id, label, score)")
    p.add_argument("b", help="the same, of the other detector")
    p.add_argument("--level", choices=("video", "frame"), default="video")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    try:
        problem = args.json and json_out.problem(args.json, "compare.json")
        if problem:
            raise CompareError(problem)
        result = compare(args.a, args.b, args.level)
        print(format_result(result))
        problem = args.json and json_out.write(args.json, result, allow_nan=False)
        if problem:
            raise CompareError(problem)
    except CompareError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
