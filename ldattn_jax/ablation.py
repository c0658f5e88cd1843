"""Paper Table VIII on the synthetic set: variants x seeds, scored on a held-out build.

Run:
  python -m ldattn_jax.ablation        # 4 variants x seeds 0,1 (3 seeds: 35 min on 2 cores)
  python -m ldattn_jax.ablation --variants xception,lda_st --seeds 0,1,2 --heldout-videos 60

Why not just the demo's test split: it holds 6 real and 24 fake videos, so one
video moves a per-method AUC by 1/36 and a single training seed moves it more.
Here every (variant, seed) trains with `configs/demo.py` on the demo's training
split (the workdirs of seed 0 are the demo's own `OUT/train_<variant>`, reused
when finished), then its best-on-validation checkpoint is scored on every split
of a second synthetic build made with another seed (new looks, motion, light
and noise of the same two photos; none of it trained on). The table gives the
mean and the spread over seeds of:

  all                 video AUC, reals vs every fake
  per-frame methods   video AUC, reals vs the fakes whose frames differ in kind
                      (Upsampling, MismatchedColor, AbnormalStructure) -- the
                      analogue of FF++, where Table VIII was measured
  TemporalJitter      video AUC, reals vs the temporal-only fakes (caught only by
                      models that see the residuals)
  frame AUC           all, frame level
  pointing            defect capture, per attention module: how often the map's
                      peak falls in the manipulated region (uniform map: chance)

Writes OUT/ablation/ablation.json (every run and the aggregate) and
OUT/ablation/ablation.md (the table), again after each run: an interrupted
ablation leaves the table of what finished ("finished": false). A run that
fails (a diverged seed, a damaged checkpoint) is said at once and listed
under the table; the others still run, and the exit status is 1.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import numpy as np

from data_prep import cli
from ldattn_jax import demo, json_out, paper_tables
from ldattn_jax.metrics import TooFewVideos, binary_metrics, paired_auc_difference

# Methods of the synthetic set whose single frames are unchanged in kind
# (data_prep/synthesize.py): a frame-only model cannot separate them from reals.
TEMPORAL_ONLY = ("TemporalJitter",)
# Paper Table VIII (FF++ HQ, frame level): AUC and ACC per variant. By AUC the order
# is xception < spatial < temporal < spatial-temporal; by ACC spatial and temporal
# swap (99.11 vs 98.80). The paper's own claims are the robust part: both modules
# beat the backbone by >= 3 points, and the combination is best.
PAPER_AUC = {v: m["auc"] for v, m in paper_tables.TABLE_VIII.items()}
PAPER_ACC = {v: m["acc"] for v, m in paper_tables.TABLE_VIII.items()}
PAPER_ORDER = tuple(sorted(PAPER_AUC, key=PAPER_AUC.get))  # by AUC, worst to best
HELDOUT_SEED = 1000  # synthesize seed of the held-out build (the demo's is 0)


def _read_csv(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def run_numbers(result: dict) -> dict:
    """The table's figures for one evaluated run (an `evaluate.evaluate` result)."""
    doc = result["metrics"]
    v = _read_csv(result["video_scores"])
    label, score, method = v["label"].astype(int), v["score"].astype(float), v["method"]
    per_frame = (label == 0) | ~np.isin(method, TEMPORAL_ONLY)
    temporal = (label == 0) | np.isin(method, TEMPORAL_ONLY)
    out = {
        "step": doc["checkpoint"]["step"],
        "videos": doc["video"]["counts"],
        "video_auc_all": doc["video"]["auc"],
        "video_auc_per_frame_methods": binary_metrics(label[per_frame], score[per_frame])["auc"],
        "video_auc_temporal_only": binary_metrics(label[temporal], score[temporal])["auc"],
        "frame_auc_all": doc["frame"]["auc"],
        "video_acc_all": doc["video"]["acc"],
        # For paper_steps' paired test of two variants on the same videos.
        "video_scores": result["video_scores"],
    }
    capture = doc.get("defect_capture") or {}
    for module, d in (capture.get("modules") or {}).items():
        out[f"pointing_{module}"] = d["all"]["pointing_hit_rate"]
        out[f"pointing_{module}_uniform"] = d["all"]["pointing_uniform"]
    return out


def aggregate(runs: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Per variant: mean, sample sd (ddof 1; 0 for one seed), min and max of every figure."""
    agg = {}
    for variant, by_seed in runs.items():
        keys = sorted({k for r in by_seed.values() for k, x in r.items() if _is_num(x)})
        agg[variant] = {"seeds": sorted(by_seed)}
        for k in keys:
            xs = np.asarray([r[k] for r in by_seed.values() if _is_num(r.get(k))], np.float64)
            agg[variant][k] = {
                "mean": float(xs.mean()),
                "sd": float(xs.std(ddof=1)) if xs.size > 1 else 0.0,
                "min": float(xs.min()),
                "max": float(xs.max()),
                "n": int(xs.size),
            }
    return agg


def _is_num(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x)


# How a step (lower, higher) up Table VIII's order stands over the seeds (`pair_test`):
SHOWN = "higher"  # higher in a majority of seeds, and significantly so in one or more
REVERSED = "lower"  # the same the other way round
LEVEL = "level"  # neither: not shown apart (exact ties count for neither side)
STATUS_TEXT = {
    SHOWN: "reproduced",
    REVERSED: "reversed",
    LEVEL: "level (not shown apart)",
    None: "not tested",
}


def pair_test(runs: dict[str, dict[int, dict]], lower: str, higher: str, key: str) -> dict:
    """``higher`` against ``lower`` on `key`, seed by seed (the seeds both ran).

    The mean difference; in how many seeds ``higher`` scored higher and lower
    (an exact tie is neither); where both runs of a seed kept their video
    scores, a paired bootstrap of the difference on the same videos
    (`metrics.paired_auc_difference`) and in how many seeds it is significant
    (p < SIGNIFICANCE) either way. ``status``: SHOWN when ``higher`` is higher
    in a majority of the seeds *and* significantly so in at least one (and in
    none significantly lower: seeds that contradict each other significantly
    say the training seed decides), REVERSED for the same the other way, else
    LEVEL; None without a seed to compare. A mean gap of 2e-5 AUC (one video
    pair in 14,400, in one seed) is no order.
    """
    seeds = [
        s
        for s in sorted(set(runs[lower]) & set(runs[higher]))
        if _is_num(runs[lower][s].get(key)) and _is_num(runs[higher][s].get(key))
    ]
    diffs = [runs[higher][s][key] - runs[lower][s][key] for s in seeds]
    paired = [_paired(runs[lower][s], runs[higher][s], key) for s in seeds]
    tested = [t for t in paired if t is not None]

    def significant(t: dict, sign: int) -> bool:
        # p None: no resample varied (both perfect): nothing shown either way.
        return t["p_value"] is not None and t["p_value"] < SIGNIFICANCE and sign * t["delta"] > 0

    step = {
        "lower": lower,
        "higher": higher,
        "mean_diff": float(np.mean(diffs)) if diffs else None,
        "seeds_agreeing": int(sum(d > 0 for d in diffs)),
        "seeds_disagreeing": int(sum(d < 0 for d in diffs)),
        "seeds": len(seeds),
        "p_values": [None if t is None else t["p_value"] for t in paired],
        "seeds_tested": len(tested),
        "seeds_significant": sum(significant(t, +1) for t in tested),
        "seeds_significant_reversed": sum(significant(t, -1) for t in tested),
    }
    majority = len(seeds) / 2
    if not seeds:
        step["status"] = None
    elif (
        step["seeds_agreeing"] > majority
        and step["seeds_significant"]
        and not step["seeds_significant_reversed"]
    ):
        step["status"] = SHOWN
    elif (
        step["seeds_disagreeing"] > majority
        and step["seeds_significant_reversed"]
        and not step["seeds_significant"]
    ):
        step["status"] = REVERSED
    else:
        step["status"] = LEVEL
    return step


def _claim(tests: list[dict]) -> str:
    """ "yes" when every pair it needs is shown, "no" when one is reversed, else
    "not shown"."""
    statuses = [t["status"] for t in tests]
    if statuses and all(st == SHOWN for st in statuses):
        return "yes"
    if REVERSED in statuses:
        return "no"
    return "not shown"


def order_check(agg: dict, key: str, runs: dict | None = None, steps: list | None = None) -> dict:
    """`key` against Table VIII's AUC order (over the variants that ran).

    ``runs``: the per-seed results (`aggregate`'s input), which alone can show
    an order: each step up it is `pair_test`-ed (``steps``: `paper_steps`' of
    them, where the caller has them). `reproduced`: every step SHOWN;
    `verdict`: "reproduced", "not reproduced" (a step REVERSED) or "not shown"
    (a step level or untested; without ``runs`` every step is untested: means
    alone show no order). `measured_order`: by mean, for the reader.
    `claims`: the paper's two stated conclusions, "yes" / "no" / "not shown"
    as `pair_test` finds the pairs each needs, None when a variant it needs
    did not run -- every attention variant beats the backbone, and lda_st
    beats each single module.
    """
    present = [v for v in PAPER_ORDER if v in agg and key in agg[v]]
    mean = {v: agg[v][key]["mean"] for v in present}
    ranked = sorted(present, key=lambda v: (mean[v], PAPER_ORDER.index(v)))
    attention = [v for v in present if v != "xception"]
    singles = [v for v in ("lda_spatial", "lda_temporal") if v in present]
    done = {(st["lower"], st["higher"]): st for st in steps or ()}

    def test(lower: str, higher: str) -> dict:
        if (lower, higher) not in done:
            done[lower, higher] = (
                pair_test(runs, lower, higher, key)
                if runs is not None
                else {"lower": lower, "higher": higher, "status": None}
            )
        return done[lower, higher]

    step_tests = [test(lo, hi) for lo, hi in zip(present, present[1:], strict=False)]
    statuses = [st["status"] for st in step_tests]
    needs = {
        "modules_beat_backbone": (
            [("xception", v) for v in attention] if "xception" in present and attention else None
        ),
        "combination_best": (
            [(v, "lda_st") for v in singles] if "lda_st" in present and singles else None
        ),
    }
    claim_tests = {
        c: None if pairs is None else [test(*p) for p in pairs] for c, pairs in needs.items()
    }
    return {
        "paper_order": present,
        "measured_order": ranked,
        "measured_text": _measured_text(ranked, mean),
        "reproduced": len(present) > 1 and all(st == SHOWN for st in statuses),
        "verdict": (
            "reproduced"
            if len(present) > 1 and all(st == SHOWN for st in statuses)
            else "not reproduced"
            if REVERSED in statuses
            else "not shown"
        ),
        "claims": {c: None if t is None else _claim(t) for c, t in claim_tests.items()},
        "claim_tests": {
            c: None if t is None else [(x["lower"], x["higher"], x["status"]) for x in t]
            for c, t in claim_tests.items()
        },
    }


def _measured_text(ranked: list[str], mean: dict) -> str:
    """The variants by mean, worst first; "=" between exactly equal means."""
    text = ranked[0] if ranked else ""
    for a, b in zip(ranked, ranked[1:], strict=False):
        text += f" {'=' if mean[a] == mean[b] else '<'} {b}"
    return text


# paper_steps: a step up the order counts as shown in a seed when the paired
# bootstrap's two-sided p (metrics.paired_auc_difference) is below this.
SIGNIFICANCE = 0.05
# The video subsets of the keys paper_steps tests (run_numbers' columns).
_STEP_SUBSETS = {
    "video_auc_all": lambda label, method: np.ones(label.size, bool),
    "video_auc_per_frame_methods": lambda label, method: (
        (label == 0) | ~np.isin(method, TEMPORAL_ONLY)
    ),
}


def paper_steps(runs: dict[str, dict[int, dict]], key: str) -> list[dict]:
    """Each step up Table VIII's order, seed by seed: is the gap more than noise?

    For adjacent variants (lower, higher) of PAPER_ORDER: `pair_test`. A gap
    that half the seeds contradict is not an order, whatever the means say,
    and neither is one that no seed's paired bootstrap tells from the held-out
    set's own noise.
    """
    present = [v for v in PAPER_ORDER if v in runs]
    return [pair_test(runs, lo, hi, key) for lo, hi in zip(present, present[1:], strict=False)]


def _paired(lower: dict, higher: dict, key: str) -> dict | None:
    """paired_auc_difference(lower, higher) on `key`'s videos, or None where it cannot run."""
    subset = _STEP_SUBSETS.get(key)
    paths = (lower.get("video_scores"), higher.get("video_scores"))
    if subset is None or not all(p and os.path.isfile(p) for p in paths):
        return None
    a, b = (_read_csv(p) for p in paths)
    row = {v: i for i, v in enumerate(b["video_id"])}
    if len(row) != len(a["video_id"]) or not all(v in row for v in a["video_id"]):
        return None  # not the same videos: nothing to pair
    b_score = b["score"][[row[v] for v in a["video_id"]]].astype(float)
    label = a["label"].astype(int)
    keep = subset(label, a["method"])
    try:
        return paired_auc_difference(label[keep], a["score"].astype(float)[keep], b_score[keep])
    except TooFewVideos:  # a tiny held-out build: no test, the AUCs still shown
        return None


COLUMNS = (
    ("video_auc_all", "all"),
    ("video_auc_per_frame_methods", "per-frame methods"),
    ("video_auc_temporal_only", "TemporalJitter"),
    ("frame_auc_all", "frame AUC"),
    ("pointing_spatial", "pointing spatial"),
    ("pointing_temporal", "pointing temporal"),
)


def markdown(
    agg: dict,
    heldout: dict,
    runs: dict | None = None,
    steps: dict | None = None,
    failed: list[dict] | None = None,
) -> str:
    """The table and its reading; ``steps``: paper_steps per key, as main has
    them (else computed from ``runs``); ``failed``: the runs that did not
    finish (main's ``{'variant', 'seed', 'error'}``), listed under it."""
    lines = [
        f"Held-out synthetic build: {heldout['videos']} videos "
        f"({heldout['real']} real, {heldout['fake']} fake), {heldout['records']} stacks; "
        "mean ± sd over seeds (min–max).",
        "",
        "| variant | seeds | " + " | ".join(name for _, name in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for variant, a in agg.items():
        cells = []
        for key, _ in COLUMNS:
            if key not in a:
                cells.append("–")
                continue
            s = a[key]
            if s["n"] == 1:  # one seed: no spread measured (its sd 0.0 is no "no variance")
                cells.append(f"{s['mean']:.3f} (n = 1, no sd)")
            else:
                cells.append(f"{s['mean']:.3f} ± {s['sd']:.3f} ({s['min']:.2f}–{s['max']:.2f})")
        lines.append(f"| {variant} | {len(a['seeds'])} | " + " | ".join(cells) + " |")
    uniform = [
        a[f"pointing_{m}_uniform"]["mean"]
        for a in agg.values()
        for m in ("spatial", "temporal")
        if f"pointing_{m}_uniform" in a
    ]
    if uniform:
        lines.append("")
        lines.append(f"Pointing game of a uniform map (chance): {np.mean(uniform):.3f}.")
    lines.append(
        "Paper Table VIII (FF++ HQ) AUC: "
        + ", ".join(f"{v} {PAPER_AUC[v]:.4f}" for v in PAPER_ORDER)
        + "."
    )
    for key, name in COLUMNS[:2]:
        key_steps = steps[key] if steps else paper_steps(runs, key) if runs else None
        chk = order_check(agg, key, runs, key_steps)
        if len(chk["paper_order"]) < 2:
            lines.append(
                f"On '{name}': only {', '.join(chk['paper_order']) or 'no variant'} ran; "
                "the paper's order needs two or more (--variants)."
            )
            continue
        level = [
            f"{st['lower']} -> {st['higher']}" for st in (key_steps or ()) if st["status"] != SHOWN
        ]
        verdict = {
            "reproduced": "reproduced",
            "not reproduced": f"not reproduced (measured: {chk['measured_text']})",
            "not shown": (
                f"not shown (not shown apart: {', '.join(level)}; measured means: "
                f"{chk['measured_text']})"
                if level
                else f"not shown (no per-seed results; measured means: {chk['measured_text']})"
            ),
        }[chk["verdict"]]
        claims = ", ".join(f"{claim} {v}" for claim, v in chk["claims"].items() if v is not None)
        lines.append(
            f"On '{name}': order {' < '.join(chk['paper_order'])} {verdict}"
            + (f"; {claims}" if claims else "")
            + "."
        )
        if key_steps:
            lines.append(
                "  per step: "
                + "; ".join(
                    f"{st['lower']} -> {st['higher']} {st['mean_diff']:+.3f}, higher in "
                    f"{st['seeds_agreeing']}/{st['seeds']} seeds"
                    + (
                        f" (p < {SIGNIFICANCE:g} in {st['seeds_significant']}/"
                        f"{st['seeds_tested']}"
                        + (
                            f", lower with p < {SIGNIFICANCE:g} in "
                            f"{st['seeds_significant_reversed']}"
                            if st.get("seeds_significant_reversed")
                            else ""
                        )
                        + ", paired bootstrap over videos)"
                        if st["seeds_tested"]
                        else ""
                    )
                    + f": {STATUS_TEXT[st['status']]}"
                    for st in key_steps
                    if st["mean_diff"] is not None
                )
            )
    lines.append(
        "A step counts as reproduced when the higher variant is higher in most seeds and "
        f"significantly so (paired bootstrap, p < {SIGNIFICANCE:g}) in at least one and "
        "significantly lower in none; a claim is 'yes' when every pair it needs is, 'no' "
        "when one is reversed so, else 'not shown'."
    )
    if failed:
        # Said beside the table: a variant with fewer seeds than asked for has a
        # mean over fewer runs, and one with none is missing from the table.
        lines.append("")
        lines.append(f"Failed runs ({len(failed)}), not in the table:")
        lines.extend(f"- {f['variant']} seed {f['seed']}: {f['error']}" for f in failed)
    return "\n".join(lines)


def heldout_build(out: str, num_videos: int, frames_per_video: int, size: int, stack: int) -> str:
    """Synthesizes and builds the held-out set (once; reused when there)."""
    videos = os.path.join(out, "heldout", "videos")
    shards_dir = os.path.join(out, "heldout", "shards")
    demo.synthesize(videos, num_videos, HELDOUT_SEED)
    demo.build(videos, shards_dir, size, stack, frames_per_video)
    return shards_dir


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.ablation", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_out", help="the demo's output dir (data is shared)")
    p.add_argument("--variants", default=",".join(demo.VARIANTS))
    p.add_argument("--seeds", default="0,1", help="training seeds (config.seed)")
    p.add_argument("--videos", type=int, default=demo.NUM_VIDEOS, help="real videos, demo set")
    p.add_argument("--heldout-videos", type=int, default=60, help="real videos of the held-out set")
    p.add_argument("--heldout-frames", type=int, default=4, help="key frames per held-out video")
    # Not parse_known_args: a mistyped flag (--seed) would reach the config loader
    # as an override and fail there, after the flag's name was lost.
    args, overrides = p.parse_with_overrides(argv)
    args.out = os.path.abspath(args.out)  # orbax refuses relative checkpoint paths
    # dict.fromkeys: a variant named twice is trained and scored once.
    variants = list(dict.fromkeys(v.strip() for v in args.variants.split(",") if v.strip()))
    bad = [v for v in variants if v not in demo.VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {','.join(demo.VARIANTS)}")
    if not variants:
        p.error(f"--variants {args.variants!r} names no variant; choose from "
                f"{','.join(demo.VARIANTS)}")  # fmt: skip
    try:
        seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    if not seeds:
        p.error(f"--seeds {args.seeds!r} names no seed; e.g. --seeds 0,1,2")
    if any(o.startswith("--config.seed") for o in overrides):
        p.error("set seeds with --seeds, not --config.seed")

    import logging
    import subprocess

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("absl").setLevel(logging.WARNING)
    from data_prep import shards
    from ldattn_jax.config_utils import ConfigError
    from ldattn_jax.evaluate import evaluate

    shards_dir = os.path.join(args.out, "shards")
    try:  # the overrides checked now, not after the data is made (as the demo does)
        base = demo.demo_config(variants[0], shards_dir, overrides)
    except ConfigError as e:
        p.error(str(e))
    size, stack = int(base.model.image_size), int(base.model.stack)
    try:
        demo.synthesize(os.path.join(args.out, "videos"), args.videos, 0)
        demo.build(os.path.join(args.out, "videos"), shards_dir, size, stack, demo.FRAMES_PER_VIDEO)
        heldout = heldout_build(args.out, args.heldout_videos, args.heldout_frames, size, stack)
    except demo.StaleStage as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:  # the stage printed why
        print(f"error: {e.cmd[2]} failed (exit {e.returncode}); see above", file=sys.stderr)
        return 2
    info = shards.read_info(heldout)["splits"]

    def total(label: str, key: str) -> int:
        return sum(s["by_label"].get(label, {}).get(key, 0) for s in info.values())

    held = {
        "dir": heldout,
        "seed": HELDOUT_SEED,
        "videos": total("real", "videos") + total("fake", "videos"),
        "real": total("real", "videos"),
        "fake": total("fake", "videos"),
        "records": total("real", "records") + total("fake", "records"),
    }
    runs: dict[str, dict[int, dict]] = {v: {} for v in variants}
    failed: list[dict] = []
    t0 = time.time()

    def write(finished: bool) -> str:
        """Writes ablation.json and .md of the runs so far; returns the table.

        After every run, not only at the end: whatever stops the loop (a crash,
        a kill at a time limit) leaves the table of what finished, beside the
        workdirs a rerun reuses."""
        done = {v: by for v, by in runs.items() if by}  # a variant with no finished seed: out
        agg = aggregate(done)
        # The paired bootstraps once: the table and the JSON show the same tests.
        steps = {key: paper_steps(done, key) for key, _ in COLUMNS[:2]}
        table = markdown(agg, held, done, steps, failed)
        doc = {
            "heldout": held,
            "seeds": seeds,
            "finished": finished,  # False: written mid-way; the loop did not end
            "runs": {v: {str(s): r for s, r in by.items()} for v, by in done.items()},
            "failed": failed,
            "aggregate": agg,
            "order": {
                key: order_check(agg, key, done, steps[key]) | {"steps": steps[key]}
                for key, _ in COLUMNS[:2]
            },
            "seconds": time.time() - t0,
        }
        os.makedirs(os.path.join(args.out, "ablation"), exist_ok=True)
        # Rewritten after every run so that a kill keeps the table: atomically, or
        # a kill during the write would cut short the very file it is for.
        json_out.atomic_write(
            os.path.join(args.out, "ablation", "ablation.json"), json.dumps(doc, indent=2) + "\n"
        )
        json_out.atomic_write(os.path.join(args.out, "ablation", "ablation.md"), table + "\n")
        return table

    for seed in seeds:
        # Seed 0 trains exactly what `make demo` trains, in the same workdirs.
        out = args.out if seed == 0 else os.path.join(args.out, f"seed{seed}")
        for variant in variants:
            seeded = [*overrides, f"--config.seed={seed}"]
            try:
                demo.run_variant(variant, out, shards_dir, seeded)
                config = demo.demo_config(variant, shards_dir, seeded)
                result = evaluate(
                    config,
                    os.path.join(out, f"train_{variant}"),
                    checkpoint="best",
                    split="all",
                    data_dir=heldout,
                    figures_per_class=1,
                    failures_per_class=0,  # the table needs none; evaluate draws them on request
                    progress=False,
                )
                runs[variant][seed] = run_numbers(result) | {"metrics_json": result["metrics_json"]}
            except (ConfigError, FileNotFoundError, KeyError, ValueError, FloatingPointError) as e:
                # One run that cannot finish (a workdir of other settings: StaleStage;
                # a diverged seed: train.TrainingDiverged, a FloatingPointError; a
                # damaged checkpoint) must not cost the hours of the others: say
                # so now, go on, and list it with the table.
                error = f"{type(e).__name__}: {cli.one_line(e)}"
                failed.append({"variant": variant, "seed": seed, "error": error})
                print(f"error: {variant} seed {seed}: {error}", file=sys.stderr, flush=True)
                write(finished=False)
                continue
            print(f"== {variant} seed {seed}: " + json.dumps(
                {k: round(x, 3) for k, x in runs[variant][seed].items() if _is_num(x)}
            ), flush=True)  # fmt: skip
            write(finished=False)
    table = write(finished=True)
    print(table)
    print(f"wrote {os.path.join(args.out, 'ablation')}/ablation.{{json,md}}")
    if failed:
        print(
            f"error: {len(failed)} of {len(variants) * len(seeds)} runs failed (above, and "
            "'failed' in ablation.json); the table holds the others. Rerun the same command "
            "once the cause is fixed: finished training runs are reused",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
