"""A predict run as one page for people who read no JSON: ``OUT/report.html``.

    python -m ldattn_jax.case_report OUT/predictions.json   # (re)writes OUT/report.html

predict writes it beside ``predictions.json`` at the end of every run; this
command rewrites it from that file alone (an earlier run's
``predictions-<started>.json``, which predict keeps, gets
``report-<started>.html``). The page holds what the JSON holds, laid out for a
case file: the model and every setting that decided the
verdicts, the software that ran, then one line per video (its sha256, P(fake),
the probability at even odds where calibrated, the verdict and its caveats),
then each scored video's faces, timeline and heatmaps.

File names and error messages come from whoever made the videos: every text
is HTML-escaped, and the page runs no script and loads nothing from outside.
Figures are linked relative to OUT, so the folder travels whole (move or
archive OUT, not report.html alone).
"""

from __future__ import annotations

import html
import json
import os
import shlex
import sys
import urllib.parse

from data_prep import cli
from ldattn_jax import eval_names, json_out

REPORT = "report.html"
_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.9em; word-break: break-all; }
.fake { color: #a00; font-weight: bold; }
.real { color: #060; font-weight: bold; }
.caveat { color: #850; }
img { max-width: 100%; border: 1px solid #ccc; margin: 0.3em 0; }
section { border-top: 2px solid #ccc; margin-top: 2em; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _p(value) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _score(entry: dict, report: dict) -> str:
    """P(fake) with enough digits to read on its verdict's side of the threshold."""
    return eval_names.score_text(entry["fake_probability"], report.get("threshold"))


def _dl(items: list[tuple[str, str]]) -> str:
    """A two-column table of (label, already-escaped HTML)."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def _link(path: str, out_dir: str) -> str | None:
    """``path`` relative to OUT, as a URL path; None where it is not inside OUT.

    A folder OUT moved since predict wrote its (absolute) paths: the figure is
    looked for where predict puts it, OUT/<heatmaps|timelines>/<name>."""
    out = os.path.abspath(out_dir)
    rel = os.path.relpath(os.path.abspath(path), out)
    if rel.startswith(os.pardir):
        moved = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
        if not os.path.isfile(os.path.join(out, moved)):
            return None
        rel = moved
    # '%', '#', '?' or a space in a file name would be read as URL syntax.
    return "/".join(urllib.parse.quote(part) for part in rel.split(os.sep))


def _verdict(row: dict) -> str:
    return f'<span class="{_e(row["verdict"])}">{_e(row["verdict"])}</span>'


def _caveats(row: dict) -> list[str]:
    out = []
    if row.get("few_frames"):
        out.append("few frames: weak evidence")
    if row.get("reused"):
        out.append("score kept from an earlier run (same file bytes, checkpoint and settings)")
    for key, what in (("heatmaps_error", "no heatmaps"), ("timeline_error", "no timeline")):
        if row.get(key):
            out.append(f"{what}: {row[key]}")
    return out


def _settings(report: dict) -> str:
    ck = report.get("checkpoint") or {}
    cal = report.get("calibration")
    if cal:
        counts = cal.get("counts")
        fitted = (
            f", fitted on {counts['real']} real + {counts['fake']} fake videos" if counts else ""
        )
        calibration = _e(f"{cal['source']}: P = sigmoid({cal['a']:.4f} logit(s) "
                         f"{cal['b']:+.4f}){fitted}")  # fmt: skip
    else:
        calibration = "none (the fake probability is the model's own, not calibrated)"
    items = [
        ("model", _e(report.get("model"))),
        ("run (workdir)", f"<code>{_e(report.get('workdir'))}</code>"),
        ("checkpoint", _e(f"step {ck.get('step')} ({ck.get('which')})")),
        ("checkpoint state sha256", f"<code>{_e(ck.get('state_sha256') or 'not recorded')}</code>"),
        ("compute dtype", _e(report.get("compute_dtype"))),
        ("threshold", _e(f"{report.get('threshold')} ({report.get('threshold_source')})")),
        ("calibration at even odds", calibration),
        ("key frames per video", _e(report.get("frames_per_video"))),
        ("faces", _e(report.get("faces", "largest"))),
    ]
    return _dl(items)


def _software(prov: dict | None) -> str:
    if not prov:
        return "<p>Not recorded (a predictions.json from before provenance was written).</p>"
    commit = prov.get("git_commit") or "not a git checkout"
    if prov.get("git_dirty"):
        commit += " (with uncommitted changes to tracked files)"
    dev = prov.get("devices") or {}
    packages = ", ".join(f"{k} {v}" for k, v in sorted((prov.get("packages") or {}).items()))
    items = [
        ("ldattn_jax", _e(prov.get("ldattn_jax"))),
        ("git commit", f"<code>{_e(commit)}</code>"),
        ("python / platform", _e(f"{prov.get('python')} / {prov.get('platform')}")),
        ("devices", _e(f"{dev.get('count')} x {dev.get('kind')} ({dev.get('platform')})")),
        ("libraries", _e(packages)),
        ("command", f"<code>{_e(shlex.join(prov.get('command') or []))}</code>"),
        ("started / finished (UTC)", _e(f"{prov.get('started_utc')} / {prov.get('finished_utc')}")),
        ("weights trained by", _training(prov.get("training"))),
    ]
    return _dl(items)


def _training(sessions: list[dict] | None) -> str:
    """One line per training session that made the weights: from which step, which code."""
    if sessions is None:
        return "not recorded (a run trained before its sessions were logged)"
    lines = []
    for s in sessions:
        commit = (s.get("git_commit") or "no git checkout")[:12]
        if s.get("git_dirty"):
            commit += " with changes"
        jax_version = (s.get("packages") or {}).get("jax")
        text = (
            f"from step {s.get('start_step')}: ldattn_jax {s.get('ldattn_jax')}, code {commit}, "
            f"jax {jax_version}, started {s.get('started_utc')}"
        )
        lines.append(_e(text))
    return "<br>".join(lines) or "none"


def _summary(report: dict) -> str:
    calibrated = report.get("calibration") is not None
    head = ["#", "video", "sha256", "bytes", "frames scored", "P(fake), uncalibrated"]
    head += ["at even odds"] if calibrated else []
    head += ["verdict", "caveats"]
    lines = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]

    def num(value) -> str:
        return f'<td class="num">{_e(value)}</td>'

    for i, row in enumerate(report.get("videos", []), 1):
        cells = [num(i), f'<td><a href="#v{i}">{_e(os.path.basename(row["video"]))}</a></td>']
        if row.get("status") != "ok":
            cells += ["<td>-</td>"] * (4 + calibrated)
            cells += [f"<td>not scored ({_e(row.get('reason'))})</td>",
                      f"<td>{_e(row.get('message') or '')}</td>"]  # fmt: skip
        else:
            sha = row.get("sha256")
            short = f'<code title="{_e(sha)}">{_e(sha[:12])}…</code>' if sha else "-"
            cells += [f"<td>{short}</td>", num(row.get("size_bytes", "-")),
                      num(row["frames_scored"]), num(_score(row, report))]  # fmt: skip
            cells += [num(_p(row.get("calibrated_probability")))] if calibrated else []
            caveats = "<br>".join(_e(c) for c in _caveats(row))
            cells += [f"<td>{_verdict(row)}</td>", f'<td class="caveat">{caveats}</td>']
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(lines) + "</table>"


def _faces(row: dict, report: dict) -> str:
    calibrated = report.get("calibration") is not None
    head = ["face", "box (x0, y0, x1, y1)", "frames scored", "P(fake), uncalibrated"]
    head += ["at even odds"] if calibrated else []
    head += ["verdict"]
    lines = ["<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for f in row["faces"]:
        cells = [_e(f["face"]) + (" (decides the video)" if f["face"] == row.get("face") else ""),
                 _e(", ".join(str(int(v)) for v in f["box"])), _e(f["frames_scored"]),
                 _e(_score(f, report))]  # fmt: skip
        cells += [_e(_p(f.get("calibrated_probability")))] if calibrated else []
        verdict = _verdict(f) + (" (few frames: weak evidence)" if f.get("few_frames") else "")
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in [*cells, verdict]) + "</tr>")
    return "<table>" + "".join(lines) + "</table>"


def _figures(paths, out_dir: str, what: str) -> str:
    out = []
    for path in paths:
        link = _link(path, out_dir)
        if link is None:
            out.append(f"<p>{_e(what)} outside this folder: <code>{_e(path)}</code></p>")
        else:
            out.append(f'<a href="{_e(link)}"><img src="{_e(link)}" alt="{_e(what)}"></a>')
    return "".join(out)


def _video(i: int, row: dict, report: dict, out_dir: str) -> str:
    parts = [f'<section id="v{i}"><h2>{i}. {_e(os.path.basename(row["video"]))}</h2>']
    facts = [("file", f"<code>{_e(row['video'])}</code>")]
    if row.get("status") != "ok":
        facts += [("not scored", _e(row.get("reason"))), ("why", _e(row.get("message") or ""))]
        return "".join(parts) + _dl(facts) + "</section>"
    facts += [
        ("sha256", f"<code>{_e(row.get('sha256', 'not recorded'))}</code>"),
        ("bytes", _e(row.get("size_bytes", "not recorded"))),
        ("P(fake)", _e(_score(row, report)) + " (mean over its key frames)"),
    ]
    if row.get("calibrated_probability") is not None:
        facts.append(("at even odds", _e(_p(row["calibrated_probability"]))))
    facts.append(("verdict", _verdict(row) + _e(f" at threshold {report.get('threshold')}")))
    facts += [("caveat", _e(c)) for c in _caveats(row)]
    parts.append(_dl(facts))
    if len(row.get("faces", ())) >= 2:
        parts.append("<h3>Faces</h3>" + _faces(row, report))
    if row.get("timeline"):
        parts.append("<h3>P(fake) along the video</h3>")
        parts.append(_figures([row["timeline"]], out_dir, "timeline"))
    if row.get("heatmaps"):
        parts.append("<h3>Attention maps (first and most suspicious frame)</h3>")
        parts.append(_figures(row["heatmaps"], out_dir, "heatmap"))
    return "".join(parts) + "</section>"


def render(report: dict, out_dir: str) -> str:
    """The page for a predictions.json document whose figures lie under ``out_dir``."""
    videos = report.get("videos", [])
    scored = sum(r.get("status") == "ok" for r in videos)
    fake = sum(r.get("status") == "ok" and r.get("verdict") == "fake" for r in videos)
    title = f"ldattn_jax predict: {len(videos)} video(s), {scored} scored, {fake} fake"
    reading = (
        "P(fake) is the model's probability that a face was manipulated, the mean over the "
        "video's key frames; the verdict compares it with the threshold above. "
        + (
            "'At even odds' is that score through the run's val calibration: the probability "
            "if fakes and reals were equally likely beforehand (for prior odds O of fake to "
            "real, multiply its odds p / (1 - p) by O). "
            if report.get("calibration")
            else "Without calibration P(fake) ranks videos but is not a frequency to quote. "
        )
        + "A score from few key frames is weak evidence. The sha256 identifies the exact "
        "file scored: a copy with any other byte is another file."
    )
    skipped = report.get("skipped") or []
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e(reading)}</p>",
        "<h2>Videos</h2>",
        _summary(report),
        "<h2>Model and settings</h2>",
        _settings(report),
        "<h2>Software</h2>",
        _software(report.get("provenance")),
    ]
    if skipped:
        items = "".join(f"<li><code>{_e(s['path'])}</code>: {_e(s['why'])}</li>" for s in skipped)
        body.append(f"<h2>Skipped (not videos)</h2><ul>{items}</ul>")
    body += [_video(i, row, report, out_dir) for i, row in enumerate(videos, 1)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def page_name(predictions: str) -> str:
    """The page of a predictions file: ``predictions.json`` -> ``report.html``, an
    earlier run's ``predictions-<started>.json`` (kept by predict) -> ``report-<started>.html``."""
    name = os.path.basename(predictions)
    if name.startswith("predictions-") and name.endswith(".json"):
        return "report-" + name[len("predictions-") : -len(".json")] + ".html"
    return REPORT


def write(report: dict, out_dir: str, name: str = REPORT) -> str:
    """Writes ``out_dir/<name>`` (atomically: never half a page); its path."""
    path = os.path.join(out_dir, name)
    json_out.atomic_write(path, render(report, out_dir))
    return path


def main(argv=None) -> int:
    p = cli.ArgumentParser(
        prog="python -m ldattn_jax.case_report", description=__doc__.split("\n")[0]
    )
    p.add_argument("predictions", help="a predict run's OUT/predictions.json")
    args = p.parse_args(argv)
    out_dir = os.path.dirname(os.path.abspath(args.predictions))
    try:
        with open(args.predictions, encoding="utf-8") as f:
            report = json.load(f)
        if not isinstance(report, dict) or not isinstance(report.get("videos"), list):
            raise ValueError("not a predictions.json of predict (no 'videos' list)")
        path = write(report, out_dir, page_name(args.predictions))
    except json.JSONDecodeError as e:
        # A predictions.json written in place by an older predict that was killed.
        journal = os.path.join(out_dir, "predictions.jsonl")
        where = (
            f"the scores are in {journal} (predict's journal): rerun the same predict "
            "command, which reuses the journaled scores and writes this file again"
            if os.path.isfile(journal)
            else "rerun the predict command that wrote it"
        )
        print(f"case_report: error: {args.predictions}: damaged, not valid JSON (cut short by a "
              f"run that was killed?): {e}; {where}", file=sys.stderr)  # fmt: skip
        return 2
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"case_report: error: {args.predictions}: {e}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
