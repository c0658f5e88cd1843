"""Is detector B's AUC different from A's on the same videos? A paired bootstrap.

    python -m ldattn_jax.compare A B [--level video|frame] [--json OUT]

A and B are evaluate output directories (RUN/eval/<dataset>_<split>_<step>/)
or CSV files of another tool's scores of the same videos, with the columns
video_id, label (1 = fake), score (P(fake)), and frame_index for --level
frame. Rows are matched by video id (and frame index), never by order; both
must hold the same videos with the same labels.

Two AUCs with overlapping intervals may still differ: both detectors meet the
same hard and easy videos, and a paired bootstrap (the same resamples for
both) cancels that shared part. So this prints each AUC with its own 95%
interval, then B - A with the paired interval and p-value
(``metrics.paired_auc_difference``). Frame level resamples whole videos.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

from ldattn_jax import metrics

NEEDED = {
    "video": ("video_id", "label", "score"),
    "frame": ("video_id", "frame_index", "label", "score"),
}
EVAL_FILE = {"video": "video_scores.csv", "frame": "scores.csv"}


class CompareError(ValueError):
    """The two score sets cannot be compared; the message says why and what to do."""


def read_scores(path: str, level: str) -> dict[tuple, tuple[int, float]]:
    """{key: (label, score)} of an evaluate directory or a CSV; key = (video_id,) or
    (video_id, frame_index)."""
    if os.path.isdir(path):
        path = os.path.join(path, EVAL_FILE[level])
    if not os.path.isfile(path):
        raise CompareError(f"{path} not found: pass an evaluate output directory or a CSV file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in NEEDED[level] if c not in (reader.fieldnames or [])]
        if missing:
            raise CompareError(
                f"{path} lacks the column(s) {missing} that --level {level} needs "
                f"({', '.join(NEEDED[level])})"
            )
        out = {}
        for line, row in enumerate(reader, start=2):
            try:
                value = (int(float(row["label"])), float(row["score"]))
                # 12 and 12.0 are one frame (another tool's CSV may write either).
                frame = (str(int(float(row["frame_index"]))),) if level == "frame" else ()
            except ValueError:
                raise CompareError(
                    f"{path}:{line}: label, score or frame_index of {row} is not a number"
                ) from None
            key = (row["video_id"], *frame)
            if key in out:
                raise CompareError(f"{path}:{line}: {key} appears twice; ids must be unique")
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


def compare(path_a: str, path_b: str, level: str = "video") -> dict:
    a, b = read_scores(path_a, level), read_scores(path_b, level)
    labels, sa, sb, videos = paired_arrays(a, b, ("A", "B"))
    groups = videos if level == "frame" else None
    try:
        result = metrics.paired_auc_difference(labels, sa, sb, groups)
        ci_a, ci_b = (metrics.auc_ci(labels, s, groups) for s in (sa, sb))
    except ValueError as e:  # one class only, scores outside [0, 1], ...
        raise CompareError(str(e)) from None
    return metrics.to_jsonable(
        {
            "level": level,
            "a": path_a,
            "b": path_b,
            "counts": {"real": int((labels == 0).sum()), "fake": int(labels.sum())},
            "videos": len(set(videos.tolist())),
            **result,
            "auc_a_ci95": list(ci_a),
            "auc_b_ci95": list(ci_b),
        }
    )


def format_result(r: dict) -> str:
    unit = "videos" if r["level"] == "video" else f"frames of {r['videos']} videos"
    width = max(len(r["a"]), len(r["b"]))
    lo, hi = r["delta_ci95"]
    p = f"{r['p_value']:.3g}" if r["p_value"] >= 1e-4 else "< 1e-4"
    verdict = "differ" if lo > 0 or hi < 0 else "are not shown to differ"
    return "\n".join(
        [
            f"{r['level']} level: {r['counts']['real']} real + {r['counts']['fake']} fake "
            f"{unit}, {r['resamples']} paired resamples",
            *(
                f"  {name}  {path:<{width}}  AUC {auc:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"
                for name, path, auc, ci in (
                    ("A", r["a"], r["auc_a"], r["auc_a_ci95"]),
                    ("B", r["b"], r["auc_b"], r["auc_b_ci95"]),
                )
            ),
            f"  B - A  {r['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}]  p = {p}: the AUCs {verdict} "
            "at 95%",
        ]
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ldattn_jax.compare", description=__doc__.split("\n")[0]
    )
    p.add_argument("a", help="evaluate output directory or CSV (video_id, label, score)")
    p.add_argument("b", help="the same, of the other detector")
    p.add_argument("--level", choices=("video", "frame"), default="video")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    try:
        result = compare(args.a, args.b, args.level)
    except CompareError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, allow_nan=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
