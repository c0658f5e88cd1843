"""`make demo`: synthesize → build shards → train → evaluate, end to end on a CPU.

Run:
  python -m ldattn_jax.demo                      # lda_st, ~4 min on 2 CPU cores
  python -m ldattn_jax.demo --variants xception,lda_spatial,lda_temporal,lda_st

Everything goes under ``demo_out/`` (gitignored). Stages already done are
reused when rerun with the same settings (one done with others is an error,
never silently reused): the synthetic videos and the shards are kept, training
resumes from (or stops at) its last checkpoint, so a second run only
re-evaluates. The embedded forgery set is generated locally from images that
ship inside installed packages; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from data_prep import cli
from ldattn_jax import json_out

VARIANTS = ("xception", "lda_spatial", "lda_temporal", "lda_st")
# Data size of the demo (the model/training side lives in configs/demo.py).
# N real videos give 5N files (4 methods); ~70/15/15 % train/val/test pairs.
NUM_VIDEOS = 40
FRAMES_PER_VIDEO = 8  # key frames (stacks) per video


class StaleStage(ValueError):
    """A finished stage under OUT was made with other settings than this run asks for."""


def _stale(path: str, had: str, want: str) -> StaleStage:
    # Reusing it would print the old setting's results as this run's.
    return StaleStage(
        f"{path} was made with {had}; this run asks for {want}. Pass another --out for "
        f"these settings, or delete {path} to make it again."
    )


def _settings(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def synthesize(videos_dir: str, num_videos: int, seed: int) -> bool:
    """Writes the synthetic forgery videos unless a finished set is there (True = ran).

    A finished set of another size or seed is a StaleStage error, not reused.
    """
    done = os.path.join(videos_dir, ".done")
    want = f"videos={num_videos} seed={seed}"
    if os.path.exists(done):
        with open(done) as f:
            had = f.read().strip()
        if had != want:
            raise _stale(videos_dir, had, want)
        return False
    _run(
        [
            sys.executable,
            "-m",
            "data_prep.synthesize",
            "--out",
            videos_dir,
            "--videos",
            str(num_videos),
            "--seed",
            str(seed),
        ]
    )
    json_out.atomic_write(done, want + "\n")  # a kill never leaves half a marker
    return True


def build(videos_dir: str, shards_dir: str, size: int, stack: int, frames_per_video: int) -> bool:
    """Builds the shards unless a build of these settings is there (True = ran).

    The build's own OUT/summary.json records its arguments: a build of other
    videos, size, stack or key frames is a StaleStage error, not reused; one
    that records none is built again (from the build's cache: only the shards
    are rewritten).
    """
    from data_prep.shards import find_builder_dir

    want = {
        "root": os.path.abspath(videos_dir),
        "size": size,
        "stack": stack,
        "frames_per_video": frames_per_video,
    }
    try:
        find_builder_dir(shards_dir)
        with open(os.path.join(shards_dir, "summary.json")) as f:
            args = json.load(f)["args"]
        had = {k: args.get(k) for k in want}
        had["root"] = os.path.abspath(str(had["root"]))
    except (FileNotFoundError, KeyError, ValueError):
        had = None
    if had == want:
        return False
    if had is not None:
        raise _stale(shards_dir, _settings(had), _settings(want))
    _run(
        [
            sys.executable,
            "-m",
            "data_prep.build",
            "--dataset",
            "synthetic",
            "--root",
            videos_dir,
            "--out",
            shards_dir,
            "--size",
            str(size),
            "--stack",
            str(stack),
            "--frames-per-video",
            str(frames_per_video),
        ]
    )
    return True


def demo_config(variant: str, shards_dir: str, overrides=()):
    from ldattn_jax.config_utils import load_config

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(here, "configs", "demo.py"), overrides)
    config.model.name = variant
    config.data.dir = shards_dir
    return config


def run_variant(variant: str, out: str, shards_dir: str, overrides=()) -> dict:
    """Train (or resume) one variant; evaluate its best checkpoint on val, then on
    test at val's EER threshold and with val's even-odds calibration measured."""
    from ldattn_jax.config_utils import check_resume_config
    from ldattn_jax.evaluate import evaluate
    from ldattn_jax.train import train_and_evaluate

    config = demo_config(variant, shards_dir, overrides)
    workdir = os.path.join(out, f"train_{variant}")
    # train would extend or reuse a run of other settings (a resume may change
    # e.g. num_epochs): here that would report a mix as this setting's result.
    changed = check_resume_config(config, os.path.join(workdir, "config.json"))
    if changed:
        raise _stale(workdir, "another config", "; ".join(changed))
    print(f"== train {variant} in {workdir} (resumes if interrupted) ==", flush=True)
    t0 = time.time()
    train_and_evaluate(config, workdir)
    t1 = time.time()
    # As docs/reproduce.md does it: val first, for the decision threshold and the
    # even-odds calibration that test is then measured at (never chosen on test).
    print(f"== evaluate {variant}: best checkpoint (by validation AUC) on val ==", flush=True)
    on_val = {"threshold": "val", "calibration": "val"}
    try:
        val = evaluate(config, workdir, checkpoint="best", split="val", figures_per_class=0,
                       failures_per_class=0)["metrics"]  # fmt: skip
        if val["video"]["eer_threshold"] is None:
            raise ValueError(f"its val split holds {val['video']['counts']} videos")
    except (KeyError, ValueError) as e:  # no val split, or one class in it (a tiny --videos)
        print(f"note: no val threshold ({e}); test is measured at 0.5", flush=True)
        on_val = {}
    print(f"== evaluate {variant}: best checkpoint on test, at val's threshold ==", flush=True)
    result = evaluate(config, workdir, checkpoint="best", split="test", **on_val)
    t2 = time.time()
    result["seconds"] = {"train": t1 - t0, "evaluate": t2 - t1}
    return result


def _fmt(x) -> str:
    return "  n/a" if x is None else f"{x:.3f}"


def table(results: dict[str, dict]) -> str:
    """Per variant: overall and per-method frame/video AUC and ACC; defect capture."""
    from ldattn_jax.evaluate import summary_lines

    lines = []
    for variant, r in results.items():
        doc = r["metrics"]
        lines.append(f"== {variant} (step {doc['checkpoint']['step']}) ==")
        lines.extend("  " + line for line in summary_lines(doc))
        lines.append(f"  metrics.json: {r['metrics_json']}")
        lines.append(f"  roc.png:      {r['roc']}")
        lines.append(f"  calibration:  {r['calibration']}")
        if r["attention"]:
            lines.append(
                f"  attention:    {os.path.join(r['out_dir'], 'attention')}/ "
                f"({len(r['attention'])} PNGs)"
            )
        else:
            lines.append("  attention:    none (this variant has no attention maps)")
        if r.get("failures"):
            lines.append(
                f"  failures:     {os.path.join(r['out_dir'], 'failures')}/ "
                f"({len(r['failures'])} PNGs: the videos with the most wrong frames, paper "
                f"V-E; {r.get('failures_wrong_videos', 0)} called wrong as a whole)"
            )
    if len(results) > 1:  # the ablation at a glance (paper Table VIII)
        methods = sorted({m for r in results.values() for m in r["metrics"]["per_method"]})
        lines.append("== ablation: video AUC (paper Table VIII order) ==")
        lines.append(f"  {'variant':<14}{'all':>8}" + "".join(f"{m[:12]:>14}" for m in methods))
        for variant, r in results.items():
            doc = r["metrics"]
            per = [doc["per_method"].get(m, {}).get("video", {}).get("auc") for m in methods]
            lines.append(
                f"  {variant:<14}{_fmt(doc['video']['auc']):>8}"
                + "".join(f"{_fmt(x):>14}" for x in per)
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_out")
    p.add_argument("--variants", default="lda_st", help=f"comma-separated from {VARIANTS}")
    p.add_argument(
        "--videos", type=int, default=NUM_VIDEOS, help=f"real synthetic videos ({NUM_VIDEOS})"
    )
    p.add_argument("--seed", type=int, default=0)
    # Not parse_known_args: a mistyped flag (--variant) would pass on as a config
    # override and fail in the config loader, without its name.
    args, overrides = p.parse_with_overrides(argv)
    args.out = os.path.abspath(args.out)  # orbax refuses relative checkpoint paths
    variants = list(dict.fromkeys(v.strip() for v in args.variants.split(",") if v.strip()))
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        p.error(f"--variants {args.variants!r}: choose from {','.join(VARIANTS)}")

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    # orbax/TFDS report every file they touch at INFO; keep the progress lines readable.
    logging.getLogger("absl").setLevel(logging.WARNING)
    t_start = time.time()
    shards_dir = os.path.join(args.out, "shards")
    from ldattn_jax.config_utils import ConfigError

    try:
        base = demo_config(variants[0], shards_dir, overrides)
    except ConfigError as e:
        p.error(str(e))
    timings = {}
    try:
        t = time.time()
        synthesize(os.path.join(args.out, "videos"), args.videos, args.seed)
        timings["synthesize"] = time.time() - t
        t = time.time()
        build(
            os.path.join(args.out, "videos"),
            shards_dir,
            int(base.model.image_size),
            int(base.model.stack),
            FRAMES_PER_VIDEO,
        )
        timings["build"] = time.time() - t
    except StaleStage as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:  # the stage printed why
        stage = e.cmd[2]  # [python, -m, module, ...]
        print(f"error: {stage} failed (exit {e.returncode}); see above", file=sys.stderr)
        return 2
    results = {}
    for variant in variants:
        try:
            results[variant] = run_variant(variant, args.out, shards_dir, overrides)
        except (StaleStage, ConfigError) as e:  # ConfigError: another model section
            print(f"error: {e}", file=sys.stderr)
            return 2
        for k, v in results[variant].pop("seconds").items():
            timings[f"{k}_{variant}"] = v
    timings["total"] = time.time() - t_start
    print(table(results))
    print("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    summary = {
        "variants": {
            v: {k: r[k] for k in ("metrics_json", "roc", "out_dir")}
            | {"video": r["metrics"]["video"]}
            for v, r in results.items()
        },
        "seconds": timings,
    }
    # Whole or not at all: a kill while writing never leaves a cut-short file.
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    json_out.atomic_write(os.path.join(args.out, "summary.json"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
