"""Our evaluations beside the LDA paper's tables: which of its numbers a run reproduces.

    python -m ldattn_jax.report EVAL [EVAL ...] [--trained-on ffpp|celebdf] [--markdown]
        [--json OUT]

EVAL is an evaluate output directory (RUN/eval/<dataset>_<split>_<step>/) or
its metrics.json. For each, the figures of the paper for the same model,
dataset, compression, manipulation method and level (`paper_tables`) are put
beside ours: paper | ours | our 95% interval | where the paper's figure lies
against that interval. A paper AUC above our interval is one this run does
not reproduce on this test set; inside it, the test set cannot tell the two
apart. ACC depends on the decision threshold, which the paper does not state
(the line over each evaluation names ours), so the closing count is of AUCs.

Which table applies needs the data the run was *trained* on (Celeb-DF
scores are Table II after training on Celeb-DF, Table VI after training on
FF++): metrics.json's ``trained_on`` (evaluate records it from the run's own
build), else RUN/config.json's data.dir (that build's summary.json), else the
evaluated data when evaluate used the run's own shards, else ``--trained-on``
must say.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ldattn_jax import eval_names, metrics
from ldattn_jax import paper_tables as paper

QUALITY = {"c23": "HQ", "c40": "LQ"}


class ReportError(ValueError):
    """An evaluation cannot be reported; the message names the file and what to do."""


@dataclasses.dataclass
class Row:
    table: str
    subset: str
    level: str
    metric: str
    paper: float
    ours: float | None
    ci95: tuple[float, float] | None
    verdict: str


def load_eval(path: str) -> tuple[dict, str]:
    """(metrics.json document, its directory) of an evaluate output dir or metrics.json."""
    file = os.path.join(path, "metrics.json") if os.path.isdir(path) else path
    try:
        with open(file) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ReportError(
            f"{file} not found: pass an evaluate output directory (RUN/eval/<name>/) or "
            "its metrics.json"
        ) from None
    except ValueError as e:
        raise ReportError(f"{file} is not JSON ({e}): evaluate again to rewrite it") from None
    missing = {"model", "dataset", "frame", "video", "per_method", "per_compression"} - set(doc)
    if missing:
        raise ReportError(f"{file} lacks {sorted(missing)}: not a metrics.json of evaluate")
    return doc, os.path.dirname(os.path.abspath(file))


def training_data(eval_dir: str, doc: dict) -> tuple[str | None, str | None, str]:
    """(dataset, compression, how it was found) the run behind ``eval_dir`` trained on."""
    if doc.get("trained_on"):
        t = doc["trained_on"]
        return t["dataset"], t.get("compression"), "metrics.json trained_on"
    # Documents from before trained_on: the run's shards, if they are at hand.
    workdir = os.path.dirname(os.path.dirname(eval_dir))
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            data_dir = json.load(f)["data"]["dir"]
    except (OSError, ValueError, KeyError, TypeError):
        data_dir = None
    found = metrics.build_identity(data_dir) if data_dir else None
    if found is not None:
        return found["dataset"], found["compression"], f"{data_dir}/summary.json"
    if not eval_names.of_other_data(os.path.basename(eval_dir)):
        # evaluate read the run's own shards: what it evaluated is what it trained on.
        comps = sorted(doc["per_compression"])
        compression = comps[0] if doc["dataset"] == "ffpp" and len(comps) == 1 else None
        return doc["dataset"], compression, "the run's own shards (evaluated without --data)"
    return None, None, "unknown"


def verdict(paper_value: float, ci95) -> str:
    if ci95 is None:
        return "-"
    lo, hi = ci95
    if paper_value > hi:
        return "paper above"
    if paper_value < lo:
        return "paper below"
    return "inside"


def _rows(table: str, subset: str, level: str, block: dict, figures: dict) -> list[Row]:
    out = []
    for metric in ("acc", "auc"):
        if metric not in figures:
            continue
        # Documents from before acc_ci95 existed have only the AUC's interval.
        ci = tuple(block[f"{metric}_ci95"]) if block.get(f"{metric}_ci95") else None
        out.append(
            Row(
                table,
                subset,
                level,
                metric.upper(),
                figures[metric],
                block[metric],
                ci,
                verdict(figures[metric], ci),
            )
        )
    return out


def comparisons(doc: dict, trained_on: str | None, trained_compression: str | None):
    """(rows, notes): the paper's figures that apply to this evaluation, and why
    others do not."""
    model, dataset = doc["model"], doc["dataset"]
    if dataset == "ffpp":
        rows, notes = _ffpp(doc, model, trained_on, trained_compression)
    elif dataset == "celebdf":
        rows, notes = _celebdf(doc, model, trained_on)
    else:
        rows, notes = [], [f"the paper reports no {dataset} results"]
    if not rows and model not in paper.TABLE_VIII:
        notes.append(f"model {model}: the paper's tables hold lda_st, xception and (VIII) variants")
    return rows, notes


def _ffpp(doc: dict, model: str, trained_on, trained_compression) -> tuple[list[Row], list[str]]:
    """Tables I and VIII per compression; III and IV per method (one compression only)."""
    rows: list[Row] = []
    notes: list[str] = []
    if trained_on not in ("ffpp", None):
        return rows, [f"trained on {trained_on}: the paper reports no such FF++ test"]
    comps = sorted(doc["per_compression"])
    usable = []
    for comp in comps:
        if comp not in QUALITY:
            notes.append(f"compression {comp}: the paper reports HQ (c23) and LQ (c40) only")
        elif trained_compression not in (None, comp):
            notes.append(
                f"{comp} test of a run trained on {trained_compression}: the paper trains "
                "and tests at one compression"
            )
        else:
            usable.append(comp)
    for comp in usable:
        block = doc["per_compression"][comp]["frame"]
        subset = f"FF++ {QUALITY[comp]} ({comp}), all methods"
        if model in paper.TABLE_I[comp]:
            # At c23 Tables I and VIII give Ours and Xception the same figures.
            name = "I, VIII" if comp == "c23" else "I"
            rows += _rows(name, subset, "frame", block, paper.TABLE_I[comp][model])
        elif comp == "c23" and model in paper.TABLE_VIII:
            rows += _rows("VIII", subset, "frame", block, paper.TABLE_VIII[model])
    if len(comps) > 1:
        notes.append(
            f"per-method rows (Tables III, IV) need one compression per evaluation; this "
            f"one pools {', '.join(comps)}"
        )
        return rows, notes
    for comp in usable:  # the one compression, where it is comparable
        for method in paper.FFPP_METHODS:
            sub = doc["per_method"].get(method)
            if sub is None:
                continue
            subset = f"real + {method} ({comp})"
            if model in paper.TABLE_III:
                rows += _rows("III", subset, "frame", sub["frame"], paper.TABLE_III[model][method])
            if comp == "c40" and model in paper.TABLE_IV:
                rows += _rows("IV", subset, "video", sub["video"], paper.TABLE_IV[model][method])
    if any(r.table == "III" for r in rows):
        notes.append("Table III does not say which compression it used")
    return rows, notes


def _celebdf(doc: dict, model: str, trained_on) -> tuple[list[Row], list[str]]:
    """Table II after training on Celeb-DF, Table VI after training on FF++."""
    if trained_on == "celebdf" and model in paper.TABLE_II:
        return _rows("II", "Celeb-DF", "frame", doc["frame"], paper.TABLE_II[model]), []
    if trained_on == "ffpp" and model in paper.TABLE_VI:
        rows = _rows(
            "VI", "Celeb-DF, trained on FF++", "frame", doc["frame"], paper.TABLE_VI[model]
        )
        return rows, ['Table VI trains on "HQ and LQ of FaceForensics++"']
    if trained_on is None:
        return [], [
            "training data unknown (the run's shards are not at hand): pass --trained-on "
            "celebdf (Table II) or ffpp (Table VI)"
        ]
    return [], []


def report(paths: list[str], trained_on: str | None = None) -> list[dict]:
    """One entry per evaluation: what it is, its rows and its notes."""
    out = []
    for path in paths:
        doc, eval_dir = load_eval(path)
        if trained_on is not None:
            dataset, compression, how = trained_on, None, "--trained-on"
        else:
            dataset, compression, how = training_data(eval_dir, doc)
        rows, notes = comparisons(doc, dataset, compression)
        out.append(
            {
                "eval": eval_dir,
                "model": doc["model"],
                "dataset": doc["dataset"],
                "split": doc.get("split"),
                "step": (doc.get("checkpoint") or {}).get("step"),
                "threshold": doc.get("threshold"),
                "threshold_source": doc.get("threshold_source"),
                "trained_on": {"dataset": dataset, "compression": compression, "from": how},
                "rows": [dataclasses.asdict(r) for r in rows],
                "notes": notes,
            }
        )
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _cells(r: dict) -> tuple[str, ...]:
    ci = "-" if r["ci95"] is None else f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]"
    verdict = r["verdict"] if r["verdict"] != "-" else ""
    paper, ours = _fmt(r["paper"]), _fmt(r["ours"])
    return (r["table"], r["subset"], r["level"], r["metric"], paper, ours, ci, verdict)


HEADER = ("table", "subset", "level", "metric", "paper", "ours", "ours 95% CI", "")


def format_report(entries: list[dict], *, markdown: bool = False) -> str:
    """The printout: per evaluation a header line, its rows and notes; then the
    count of paper AUCs inside / above / below our intervals. ``markdown``:
    the rows as a Markdown table (for a README or a paper's appendix)."""
    lines = []
    tally = {"inside": 0, "paper above": 0, "paper below": 0}
    for e in entries:
        trained = e["trained_on"]
        what = trained["dataset"] or "unknown data"
        if trained["compression"]:
            what += f" {trained['compression']}"
        lines.append(
            f"{e['eval']}: {e['model']} step {e['step']} on {e['dataset']} {e['split']}, "
            f"trained on {what} ({trained['from']}); ACC at threshold {e['threshold']:.6g} "
            f"({e['threshold_source'] or 'default'})"
        )
        body = [_cells(r) for r in e["rows"]]
        if markdown and body:
            lines.append("")
            header = (*HEADER[:-1], "paper vs ours")
            lines += ["| " + " | ".join(row) + " |" for row in (header, ("---",) * len(header))]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            lines.append("")
        elif body:
            widths = [max(len(row[i]) for row in (HEADER, *body)) for i in range(len(HEADER))]
            for row in (HEADER, *body):
                cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
                lines.append(("  " + "  ".join(cells)).rstrip())
        else:
            lines.append("  no figure of the paper applies")
        for r in e["rows"]:
            # ACC hangs on a threshold the paper does not state: AUCs only.
            if r["metric"] == "AUC" and r["verdict"] in tally:
                tally[r["verdict"]] += 1
        lines.extend(f"  note: {n}" for n in e["notes"])
    n = sum(tally.values())
    if n:
        lines.append(
            f"paper AUCs against our 95% intervals: {tally['inside']} of {n} inside, "
            f"{tally['paper above']} above (not reproduced on these test sets), "
            f"{tally['paper below']} below"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ldattn_jax.report", description=__doc__.split("\n")[0]
    )
    p.add_argument("evals", nargs="+", metavar="EVAL", help="evaluate output dirs or metrics.json")
    p.add_argument(
        "--trained-on",
        choices=("ffpp", "celebdf"),
        default=None,
        help="the data every run given trained on, where its shards are not at hand",
    )
    p.add_argument("--markdown", action="store_true", help="print the rows as Markdown tables")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    try:
        entries = report(args.evals, args.trained_on)
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 1
    print(format_report(entries, markdown=args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(entries, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
