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

The paper's figures are test-split results: an evaluation of another split
(train, val, or test pooled with another) gets no rows, only a note. The
count takes each evaluation once: a path given twice is reported once, and
evaluations of one run's checkpoint on the same data and split that differ
only in threshold or compute dtype (``..._t0.3``, ``..._bfloat16``) are all
listed but counted with the first of them given.

Which table applies needs the data the run was *trained* on (Celeb-DF
scores are Table II after training on Celeb-DF, Table VI after training on
FF++). What the evaluation records wins: metrics.json's ``trained_on``
(evaluate records it from the run's own build), else RUN/config.json's
data.dir (that build's summary.json); a ``--trained-on`` that disagrees with
it is ignored, with a note. Where nothing is recorded, ``--trained-on``
says; without it, the evaluated data is taken when evaluate used the run's
own shards (no ``_data`` suffix in the directory's name).

Bad input (a missing or malformed metrics.json, an unwritable --json) is one
line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from data_prep import cli
from ldattn_jax import eval_names, json_out, metrics
from ldattn_jax import paper_tables as paper

QUALITY = {"c23": "HQ", "c40": "LQ"}
TEST_SPLIT = "test"  # the split the paper's tables are measured on
RERUN = "re-run evaluate with this version to rewrite it"

# metrics.json keys report reads, and their JSON types; evaluate has written
# all of them since schema v1 (the optional ones came later: see _OPTIONAL).
_REQUIRED = {
    "model": str,
    "dataset": str,
    "threshold": (int, float),
    "frame": dict,
    "video": dict,
    "per_method": dict,
    "per_compression": dict,
}
# Older documents lack these; report says so in a note instead of refusing.
_OPTIONAL = {
    "split": str,
    "threshold_source": str,
    "checkpoint": dict,
    "trained_on": dict,
    "shards_sha256": str,
    "model_settings": dict,
}
_JSON_TYPE = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


class ReportError(ValueError):
    """An evaluation cannot be reported; the message names the file and what to do."""


class _Malformed(ValueError):
    """A part of a metrics.json report needs is missing or of the wrong type;
    `report` adds the file's name and what to do."""


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


def metrics_file(path: str) -> str:
    """The metrics.json of an evaluate output directory, or ``path`` itself."""
    return os.path.join(path, "metrics.json") if os.path.isdir(path) else path


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _read_json(file: str):
    try:
        with open(file) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ReportError(
            f"{file} not found: pass an evaluate output directory (RUN/eval/<name>/) or "
            "its metrics.json"
        ) from None
    except OSError as e:  # a directory named metrics.json, no permission, ...
        raise ReportError(
            f"{file} cannot be read ({e.strerror}): pass an evaluate output directory "
            "(RUN/eval/<name>/) or its metrics.json file"
        ) from None
    except ValueError as e:  # not JSON, not UTF-8
        raise ReportError(f"{file} is not JSON ({e}): {RERUN}") from None


def schema_problem(doc) -> str | None:
    """What keeps ``doc`` from being a metrics.json report can read, or None."""
    if not isinstance(doc, dict):
        return f"holds {_json_type(doc)}, not a JSON object"
    missing = sorted(set(_REQUIRED) - set(doc))
    if missing:
        return f"lacks {missing}"
    for key, kind in [*_REQUIRED.items(), *_OPTIONAL.items()]:
        value = doc.get(key)
        optional_null = key in _OPTIONAL and value is None
        if not optional_null and (not isinstance(value, kind) or isinstance(value, bool)):
            want = "a number" if kind == (int, float) else _json_type(kind())
            return f"has {key} = {_json_type(value)}, not {want}"
    step = (doc.get("checkpoint") or {}).get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        return f"has checkpoint.step = {step!r}, not an integer"
    trained = doc.get("trained_on")
    if trained is not None and not isinstance(trained.get("dataset"), str):
        return f"has trained_on = {trained!r} without a 'dataset' name"
    return None


def load_eval(path: str) -> tuple[dict, str]:
    """(metrics.json document, its directory) of an evaluate output dir or metrics.json."""
    file = metrics_file(path)
    doc = _read_json(file)
    problem = schema_problem(doc)
    if problem:
        raise ReportError(f"{file} {problem}: not a metrics.json of evaluate; {RERUN}")
    return doc, os.path.dirname(os.path.abspath(file))


def _recorded_training(eval_dir: str, doc: dict) -> tuple[str, str | None, str] | None:
    """(dataset, compression, where) of what the evaluation records the run
    trained on: metrics.json, else the run's config.json -> summary.json."""
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
    return None


def training_data(
    eval_dir: str, doc: dict, flag: str | None = None
) -> tuple[str | None, str | None, str, list[str]]:
    """(dataset, compression, how it was found, notes) of what the run behind
    ``eval_dir`` trained on. A record wins over ``flag`` (--trained-on): the
    flag is one value for every evaluation given, a record is this run's own."""
    recorded = _recorded_training(eval_dir, doc)
    if recorded is not None:
        dataset, compression, how = recorded
        notes = []
        if flag is not None and flag != dataset:
            what = f"{dataset} {compression}" if compression else dataset
            notes.append(
                f"--trained-on {flag} ignored: {how} records {what}, and what the run "
                "records wins (the flag is for runs that record nothing)"
            )
        return dataset, compression, how, notes
    if flag is not None:
        return flag, None, "--trained-on", []
    if not eval_names.of_other_data(os.path.basename(eval_dir)):
        # evaluate read the run's own shards: what it evaluated is what it trained on.
        comps = sorted(doc["per_compression"])
        compression = comps[0] if doc["dataset"] == "ffpp" and len(comps) == 1 else None
        how = "the run's own shards (evaluated without --data)"
        return doc["dataset"], compression, how, []
    return None, None, "unknown", []


# A point "interval" [x, x]: every bootstrap resample gave the same value (a
# perfect ranking gives [1, 1] on 6 videos as on 6,000), so it bounds nothing
# and a paper figure outside it is neither above nor below what this test set
# shows. evaluate now writes an exact bound there instead (metrics.separation_bound,
# the block's ci95_note); metrics.json files written before hold the point.
CANNOT_TELL = "cannot tell"


def verdict(paper_value: float, ci95) -> str:
    """Where the paper's figure lies against our 95% interval: "inside", "paper
    above", "paper below"; CANNOT_TELL for a point interval; "-" for none."""
    if ci95 is None:
        return "-"
    lo, hi = ci95
    if lo == hi:
        return CANNOT_TELL
    if paper_value > hi:
        return "paper above"
    if paper_value < lo:
        return "paper below"
    return "inside"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _block(doc: dict, *keys: str) -> dict:
    """doc[keys[0]][keys[1]]...: a block of figures, or _Malformed naming its path."""
    node = doc
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise _Malformed(f"{'.'.join(keys)} is missing or not an object")
    return node


def _figure(block: dict, metric: str, where: str) -> tuple[float | None, tuple | None]:
    """(our value, its 95% interval or None) of ``metric`` in ``block``."""
    if metric not in block:
        raise _Malformed(f"{where} has no {metric!r}")
    value = block[metric]  # None: NaN when written (e.g. one class only)
    if value is not None and not _number(value):
        raise _Malformed(f"{where}.{metric} = {value!r} is not a number")
    # Documents from before acc_ci95 existed have only the AUC's interval.
    ci = block.get(f"{metric}_ci95")
    if ci is None:
        return value, None
    if not (isinstance(ci, list) and len(ci) == 2 and all(map(_number, ci))):
        raise _Malformed(f"{where}.{metric}_ci95 = {ci!r} is not a [low, high] pair")
    return value, tuple(ci)


def _rows(table: str, subset: str, level: str, doc: dict, keys: tuple, figures: dict):
    """The rows of ``figures`` (the paper's) beside the block ``doc[keys...]`` (ours)."""
    block, where = _block(doc, *keys), ".".join(keys)
    out = []
    for metric in ("acc", "auc"):
        if metric not in figures:
            continue
        ours, ci = _figure(block, metric, where)
        out.append(
            Row(
                table,
                subset,
                level,
                metric.upper(),
                figures[metric],
                ours,
                ci,
                verdict(figures[metric], ci),
            )
        )
    return out


def split_note(split: str | None) -> str | None:
    """Why an evaluation of ``split`` is not put beside the paper, or None for test."""
    if split == TEST_SPLIT:
        return None
    if split is None:
        return (
            "metrics.json records no split (an older evaluate): the paper's tables are "
            f"test-split results, so none is put beside it; {RERUN}"
        )
    parts = split.split("+")
    if TEST_SPLIT in parts:
        return (
            f"split {split} pools test with {'+'.join(p for p in parts if p != TEST_SPLIT)}: "
            "the paper's tables are of the test split alone; evaluate --split test to "
            "compare"
        )
    return (
        f"split {split}: the paper's tables are test-split results, so none is put "
        "beside it; evaluate --split test to compare"
    )


def model_settings(eval_dir: str, doc: dict) -> dict | None:
    """The run's ``config.model``: metrics.json's ``model_settings``, else the run's
    config.json (the folder above eval/); None where neither is at hand."""
    if isinstance(doc.get("model_settings"), dict):
        return doc["model_settings"]
    workdir = os.path.dirname(os.path.dirname(eval_dir))
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            model = json.load(f)["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return model if isinstance(model, dict) else None


def comparisons(
    doc: dict,
    trained_on: str | None,
    trained_compression: str | None,
    settings: dict | None = None,
):
    """(rows, notes): the paper's figures that apply to this evaluation, and why
    others do not. ``settings``: the run's ``config.model`` (`model_settings`);
    a network other than the paper's is put beside the sweep it belongs to
    (Tables IX-XI) or beside nothing. None: not recorded, taken as the paper's
    network, with a note."""
    model, dataset = doc["model"], doc["dataset"]
    off = split_note(doc.get("split"))
    if off:
        return [], [off]
    differences = paper.network_differences(model, settings or {})
    if differences:
        return _sweep(doc, model, trained_on, trained_compression, differences)
    if dataset == "ffpp":
        rows, notes = _ffpp(doc, model, trained_on, trained_compression)
    elif dataset == "celebdf":
        rows, notes = _celebdf(doc, model, trained_on)
    else:
        rows, notes = [], [f"the paper reports no {dataset} results"]
    if not rows and model not in paper.TABLE_VIII:
        notes.append(f"model {model}: the paper's tables hold lda_st, xception and (VIII) variants")
    if rows and settings is None:
        notes.append(
            "the run's model settings are not recorded (no model_settings in metrics.json, "
            "no config.json above eval/): compared as the paper's network"
        )
    return rows, notes


def _sweep(doc: dict, model: str, trained_on, trained_compression, differences: dict):
    """The one row of Table IX (m maps), X (n frames) or XI (resolution) that a
    network differing from the paper's in that one setting belongs to."""
    what = ", ".join(
        f"model.{k} = {ours!r} (the paper's {theirs!r})"
        for k, (ours, theirs) in differences.items()
    )
    sweeps = {
        # setting: (table, its figures for this model or None, its data, the setting's name)
        "num_maps": ("IX", paper.TABLE_IX if model == "lda_st" else None, "ffpp", "m"),
        "stack": ("X", paper.TABLE_X if model == "lda_st" else None, "ffpp", "n"),
        "image_size": ("XI", paper.TABLE_XI.get(model), "celebdf", "R"),
    }
    (key,) = differences if len(differences) == 1 else (None,)
    if key not in sweeps or sweeps[key][1] is None:
        return [], [f"{what}: no table of the paper has this network"]
    table, figures, dataset, name = sweeps[key]
    value = differences[key][0]
    if value not in figures:
        return [], [f"{what}: Table {table} has {name} = {sorted(figures)} only"]
    if doc["dataset"] != dataset or trained_on not in (dataset, None):
        data = "FF++ HQ (c23)" if dataset == "ffpp" else "Celeb-DF, trained on it"
        return [], [f"{what}: Table {table} is of {data}"]
    if trained_on is None and dataset == "celebdf":  # Celeb-DF after FF++ is no row of XI
        return [], [
            f"{what}: training data unknown (the run's shards are not at hand): pass "
            f"--trained-on celebdf for Table {table}"
        ]
    notes = [f"{what}: Table {table}'s row for {name} = {value}, not the main tables"]
    if dataset == "celebdf":
        subset = f"Celeb-DF at {value}x{value}"
        notes.append("Table XI does not name its metric: read as ACC (its 398 row is Table II's)")
        return _rows(table, subset, "frame", doc, ("frame",), {"acc": figures[value]}), notes
    if "c23" not in doc["per_compression"] or trained_compression not in (None, "c23"):
        return [], [f"{what}: Table {table} is of FF++ HQ (c23) (its default row is Table I's)"]
    if why := _other_methods(doc):
        return [], [f"{what}: Table {table} pools FF++'s four methods; {why}"]
    subset = f"FF++ HQ (c23), all methods, {name} = {value}"
    keys = ("per_compression", "c23", "frame")
    if key == "stack":
        notes.append("Table X's n read as model.stack (IV-D); by its title n would be stack + 1")
    return _rows(table, subset, "frame", doc, keys, figures[value]), notes


def _other_methods(doc: dict) -> str | None:
    """Why ``doc``'s pooled FF++ figures are not the paper's "all methods" ones
    (a build of other fake methods than its four: data_prep.build --methods), or None."""
    ours = set(doc["per_method"])
    if ours == set(paper.FFPP_METHODS):
        return None
    missing = [m for m in paper.FFPP_METHODS if m not in ours]
    extra = sorted(ours - set(paper.FFPP_METHODS))
    parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
        [f"adds {', '.join(extra)}"] if extra else []
    )
    return (
        f"this FF++ build {' and '.join(parts)}: its pooled figures are not the paper's "
        f"all-methods ones ({', '.join(paper.FFPP_METHODS)}); per-method rows still compare"
    )


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
    if why := _other_methods(doc):
        notes.append(why)
    for comp in usable if why is None else ():
        keys = ("per_compression", comp, "frame")
        subset = f"FF++ {QUALITY[comp]} ({comp}), all methods"
        if model in paper.TABLE_I[comp]:
            # At c23 Tables I and VIII give Ours and Xception the same figures,
            # and so do IX (m = 4) and X (n = 3) for Ours.
            name = "I" if comp != "c23" else "I, VIII, IX, X" if model == "lda_st" else "I, VIII"
            rows += _rows(name, subset, "frame", doc, keys, paper.TABLE_I[comp][model])
        elif comp == "c23" and model in paper.TABLE_VIII:
            rows += _rows("VIII", subset, "frame", doc, keys, paper.TABLE_VIII[model])
    if len(comps) > 1:
        notes.append(
            f"per-method rows (Tables III, IV) need one compression per evaluation; this "
            f"one pools {', '.join(comps)}"
        )
        return rows, notes
    for comp in usable:  # the one compression, where it is comparable
        rows += _per_method(doc, model, comp)
    if any(r.table == "III" for r in rows):
        notes.append(
            "Table III does not say which compression it used, nor whether one model was "
            "trained per method ('trained and tested on different manipulation methods', "
            "V-C); ours are per-method slices of this one run"
        )
    return rows, notes


def _per_method(doc: dict, model: str, comp: str) -> list[Row]:
    """Table III (frame level) and, at c40, Table IV (video level) per method."""
    rows: list[Row] = []
    for method in paper.FFPP_METHODS:
        if method not in doc["per_method"]:
            continue
        subset = f"real + {method} ({comp})"
        keys = ("per_method", method)
        if model in paper.TABLE_III:
            figures = paper.TABLE_III[model][method]
            rows += _rows("III", subset, "frame", doc, (*keys, "frame"), figures)
        if comp == "c40" and model in paper.TABLE_IV:
            figures = paper.TABLE_IV[model][method]
            rows += _rows("IV", subset, "video", doc, (*keys, "video"), figures)
    return rows


def _celebdf(doc: dict, model: str, trained_on) -> tuple[list[Row], list[str]]:
    """Table II after training on Celeb-DF, Table VI after training on FF++."""
    if trained_on == "celebdf" and model in paper.TABLE_II:
        rows = _rows("II", "Celeb-DF", "frame", doc, ("frame",), paper.TABLE_II[model])
        # Table XI's 398 row: Table II's ACC for Ours, the authors' own Xception.
        xi = {"acc": paper.TABLE_XI[model][398]}
        rows += _rows("XI", "Celeb-DF at 398x398", "frame", doc, ("frame",), xi)
        return rows, ["Table XI does not name its metric: read as ACC (its 398 row is Table II's)"]
    if trained_on == "ffpp" and model in paper.TABLE_VI:
        subset = "Celeb-DF, trained on FF++"
        rows = _rows("VI", subset, "frame", doc, ("frame",), paper.TABLE_VI[model])
        return rows, ['Table VI trains on "HQ and LQ of FaceForensics++"']
    if trained_on is None:
        return [], [
            "training data unknown (the run's shards are not at hand): pass --trained-on "
            "celebdf (Table II) or ffpp (Table VI)"
        ]
    return [], []


def _evaluation_key(eval_dir: str, doc: dict) -> tuple | None:
    """What makes two evaluations one measurement of the AUCs: the run (the
    folder above eval/), model, checkpoint step, dataset, split and data
    fingerprint. Threshold and compute dtype are left out: the first does not
    move an AUC, the second only by rounding. None where the step or the data
    is not recorded (older documents): sameness cannot be told then."""
    step = (doc.get("checkpoint") or {}).get("step")
    if step is None or doc.get("shards_sha256") is None:
        return None
    run = os.path.realpath(os.path.dirname(os.path.dirname(eval_dir)))
    # Fingerprints of two versions differ for one build: the version is part of the key.
    version = doc.get("shards_fingerprint_version", 1)
    return (
        run,
        doc["model"],
        step,
        doc["dataset"],
        doc.get("split"),
        version,
        doc["shards_sha256"],
    )


def _entry(path: str, trained_on: str | None) -> tuple[dict, tuple | None]:
    """(report entry, `_evaluation_key`) of one evaluation."""
    doc, eval_dir = load_eval(path)
    dataset, compression, how, notes = training_data(eval_dir, doc, trained_on)
    try:
        rows, more = comparisons(doc, dataset, compression, model_settings(eval_dir, doc))
    except _Malformed as e:
        raise ReportError(f"{metrics_file(path)}: {e}; {RERUN}") from None
    entry = {
        "eval": eval_dir,
        "model": doc["model"],
        "dataset": doc["dataset"],
        "split": doc.get("split"),
        "step": (doc.get("checkpoint") or {}).get("step"),
        "threshold": doc["threshold"],
        "threshold_source": doc.get("threshold_source"),
        "trained_on": {"dataset": dataset, "compression": compression, "from": how},
        "rows": [dataclasses.asdict(r) for r in rows],
        "notes": notes + more,
        # The evaluation whose AUCs stand for this one's in the count, if another.
        "counted_with": None,
    }
    return entry, _evaluation_key(eval_dir, doc)


def _count_once(entry: dict, key: tuple | None, first_of: dict) -> None:
    """Marks ``entry`` as counted with the first evaluation given of the same key."""
    if key is None:
        return
    first = first_of.setdefault(key, entry["eval"])
    if first == entry["eval"]:
        return
    entry["counted_with"] = first
    if entry["rows"]:
        entry["notes"].append(
            f"the same checkpoint, data and split as {first}, at another threshold or "
            "compute dtype: its AUCs are not counted again"
        )


def report(paths: list[str], trained_on: str | None = None) -> list[dict]:
    """One entry per evaluation: what it is, its rows and its notes. A path
    given twice (also as directory and as its metrics.json) is one entry."""
    entries: list[dict] = []
    by_file: dict[str, dict] = {}  # real path of a metrics.json -> its entry
    first_of: dict[tuple, str] = {}  # `_evaluation_key` -> the first such evaluation
    for path in paths:
        real = os.path.realpath(metrics_file(path))
        if real in by_file:
            by_file[real]["notes"].append(f"given again as {path}: reported and counted once")
            continue
        entry, key = _entry(path, trained_on)
        by_file[real] = entry
        entries.append(entry)
        _count_once(entry, key, first_of)
    return entries


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _cells(r: dict) -> tuple[str, ...]:
    ci = "-" if r["ci95"] is None else f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]"
    verdict = r["verdict"] if r["verdict"] != "-" else ""
    paper, ours = _fmt(r["paper"]), _fmt(r["ours"])
    return (r["table"], r["subset"], r["level"], r["metric"], paper, ours, ci, verdict)


HEADER = ("table", "subset", "level", "metric", "paper", "ours", "ours 95% CI", "")


def _header(e: dict) -> str:
    trained = e["trained_on"]
    what = trained["dataset"] or "unknown data"
    if trained["compression"]:
        what += f" {trained['compression']}"
    # Documents from before threshold_source: how the threshold was chosen is
    # not known (0.5 may have been given, another value read from val).
    source = e["threshold_source"] or "source not recorded"
    threshold = eval_names.threshold_text(e["threshold"])
    return (
        f"{e['eval']}: {e['model']} step {e['step']} on {e['dataset']} {e['split']}, "
        f"trained on {what} ({trained['from']}); ACC at threshold {threshold} ({source})"
    )


def _table_lines(body: list[tuple[str, ...]], markdown: bool) -> list[str]:
    if not body:
        return ["  no figure of the paper applies"]
    if markdown:
        header = (*HEADER[:-1], "paper vs ours")
        lines = ["| " + " | ".join(row) + " |" for row in (header, ("---",) * len(header))]
        return ["", *lines, *("| " + " | ".join(row) + " |" for row in body), ""]
    widths = [max(len(row[i]) for row in (HEADER, *body)) for i in range(len(HEADER))]
    return [
        ("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in (HEADER, *body)
    ]


def format_report(entries: list[dict], *, markdown: bool = False) -> str:
    """The printout: per evaluation a header line, its rows and notes; then the
    count of paper AUCs inside / above / below our intervals. ``markdown``:
    the rows as a Markdown table (for a README or a paper's appendix)."""
    lines = []
    tally = {"inside": 0, "paper above": 0, "paper below": 0, CANNOT_TELL: 0}
    for e in entries:
        lines.append(_header(e))
        lines += _table_lines([_cells(r) for r in e["rows"]], markdown)
        for r in e["rows"]:
            # ACC hangs on a threshold the paper does not state: AUCs only;
            # another threshold or dtype of a counted evaluation: not again.
            if r["metric"] == "AUC" and r["verdict"] in tally and not e.get("counted_with"):
                tally[r["verdict"]] += 1
        lines.extend(f"  note: {n}" for n in e["notes"])
    n = sum(tally.values())
    if n:
        lines.append(
            f"paper AUCs against our 95% intervals: {tally['inside']} of {n} inside, "
            f"{tally['paper above']} above (not reproduced on these test sets), "
            f"{tally['paper below']} below"
            + (
                f", {tally[CANNOT_TELL]} cannot tell (a point interval: every bootstrap "
                f"resample agreed, so it bounds nothing; {RERUN})"
                if tally[CANNOT_TELL]
                else ""
            )
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.report", description=__doc__.split("\n")[0])
    p.add_argument("evals", nargs="+", metavar="EVAL", help="evaluate output dirs or metrics.json")
    p.add_argument(
        "--trained-on",
        choices=("ffpp", "celebdf"),
        default=None,
        help="the data the runs given trained on, for those that do not record it "
        "(metrics.json trained_on or the run's shards win over it)",
    )
    p.add_argument("--markdown", action="store_true", help="print the rows as Markdown tables")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    try:
        # Checked first: a typo in OUT should not cost the whole report.
        problem = args.json and json_out.problem(args.json, "report.json")
        if problem:
            raise ReportError(problem)
        entries = report(args.evals, args.trained_on)
        print(format_report(entries, markdown=args.markdown))
        if args.json:
            problem = json_out.write(args.json, entries)
            if problem:
                raise ReportError(problem)
            print(f"wrote {args.json}")
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
