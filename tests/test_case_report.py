"""predict's report.html: everything escaped, nothing loaded from outside, every figure found."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import urllib.parse

import pytest

from ldattn_jax import case_report

# A file name an adversary could choose: markup, an entity, quotes, URL syntax.
HOSTILE = "<img src=x onerror=alert(1)>&amp;\"q'#1?.mp4"
SHA = "ab" * 32
TRAINING = [  # two sessions: trained from step 0, resumed at 300 from an edited checkout
    {"start_step": 0, "ldattn_jax": "0.1.0", "git_commit": "e" * 40, "git_dirty": False,
     "packages": {"jax": "0.10.2"}, "started_utc": "2026-11-29T10:00:00+00:00"},
    {"start_step": 300, "ldattn_jax": "0.1.0", "git_commit": "d" * 40, "git_dirty": True,
     "packages": {"jax": "0.10.2"}, "started_utc": "2026-11-29T12:00:00+00:00"},
]  # fmt: skip


class _Page(html.parser.HTMLParser):
    """The page's text, its tags and the attributes that point somewhere."""

    def __init__(self):
        super().__init__()
        self.text, self.tags, self.refs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def _report(out, *, calibrated=True):
    (out / "heatmaps").mkdir(parents=True)
    (out / "timelines").mkdir()
    heat = out / "heatmaps" / "clip#1_f3.png"
    heat.write_bytes(b"png")
    line = out / "timelines" / "clip 50%.png"
    line.write_bytes(b"png")
    ok = {
        "video": f"/cases/7/{HOSTILE}", "status": "ok", "sha256": SHA, "size_bytes": 1234,
        "frames_scored": 5, "fake_probability": 0.8125, "verdict": "fake", "few_frames": True,
        "reused": False, "heatmaps": [str(heat)], "timeline": str(line),
        "face": 1, "faces": [
            {"face": 0, "box": [0, 0, 80, 80], "frames_scored": 5, "fake_probability": 0.2,
             "verdict": "real", "few_frames": True},
            {"face": 1, "box": [100, 0, 160, 60], "frames_scored": 5, "fake_probability": 0.8125,
             "verdict": "fake", "few_frames": True},
        ],
    }  # fmt: skip
    if calibrated:
        ok["calibrated_probability"] = 0.61
        for f, p in zip(ok["faces"], (0.1, 0.61), strict=True):
            f["calibrated_probability"] = p
    bad = {"video": "/cases/7/broken.mp4", "status": "error", "reason": "truncated",
           "message": "decoded 3 of 300 <frames>"}  # fmt: skip
    return {
        "workdir": "/runs/ffpp", "model": "lda_st", "faces": "all",
        "checkpoint": {"step": 7, "which": "best", "state_sha256": "cd" * 32},
        "compute_dtype": "float32", "threshold": 0.4515, "threshold_source": "eval/v/metrics.json",
        "calibration": {"method": "platt_even_odds", "a": 0.6, "b": -0.9,
                        "counts": {"real": 6, "fake": 24}, "source": "eval/v/metrics.json"}
        if calibrated else None,
        "frames_per_video": 32, "videos": [ok, bad],
        "skipped": [{"path": "/cases/7/notes<1>.txt", "why": "not a video file name"}],
        "provenance": {"ldattn_jax": "0.1.0", "git_commit": "f" * 40, "git_dirty": True,
                       "python": "3.11.7", "platform": "Linux", "packages": {"jax": "0.10.2"},
                       "devices": {"platform": "cpu", "kind": "cpu", "count": 8},
                       "command": ["python", "-m", "ldattn_jax.predict", "a b.mp4"],
                       "started_utc": "2026-11-30T23:00:00+00:00",
                       "finished_utc": "2026-11-30T23:01:00+00:00",
                       "training": TRAINING},
    }  # fmt: skip


def test_a_score_reads_on_its_verdicts_side_of_the_threshold(tmp_path):
    # Four decimals showed 0.99999 as 1.0000 beside threshold 0.999997 and the
    # verdict "real"; 0.49996 as 0.5000 (real) and 0.50004 as 0.5000 (fake) at 0.5.
    from ldattn_jax import eval_names, predict

    cases = [(0.99999, 0.999997), (0.49996, 0.5), (0.50004, 0.5), (0.5, 0.5), (0.8125, 0.4515)]
    for score, threshold in cases:
        text = eval_names.score_text(score, threshold)
        assert (float(text) > threshold) == (score > threshold), (score, threshold, text)
        assert len(text.split(".")[1]) >= 4
    assert eval_names.score_text(0.8125, 0.4515) == "0.8125"  # far from it: 4 places
    assert eval_names.score_text(0.99999, 0.999997) == "0.99999"
    assert eval_names.score_text(0.50004, 0.5) == "0.50004"
    assert eval_names.score_text(0.5, 0.5) == "0.5000"  # on it: real, and reads so
    report = _report(tmp_path)
    report["threshold"], report["videos"][0]["fake_probability"] = 0.999997, 0.99999
    report["videos"][0]["verdict"] = "real"
    table = predict.format_table(report)
    assert "0.99999 " in table and "1.0000" not in table, table
    page = case_report.render(report, str(tmp_path))
    assert "0.99999<" in page and "1.0000" not in page


def test_every_name_and_message_is_text_never_markup(tmp_path):
    report = _report(tmp_path / "out")
    page = case_report.render(report, str(tmp_path / "out"))
    parsed = _parse(page)
    assert "script" not in parsed.tags and "img" in parsed.tags
    text = "".join(parsed.text)
    # The hostile name reads back as written, as text: no tag of it was made.
    assert HOSTILE in text and "decoded 3 of 300 <frames>" in text and "notes<1>.txt" in text
    assert parsed.tags.count("img") == 2  # the heatmap and the timeline, none from the name
    assert "onerror" not in " ".join(parsed.refs)


def test_figures_are_linked_inside_out_and_found_after_out_moves(tmp_path):
    out = tmp_path / "out"
    report = _report(out)
    for where in (out, tmp_path / "archive" / "case7"):  # as written, then moved whole
        if where != out:
            shutil.move(str(out), str(where))
        refs = _parse(case_report.render(report, str(where))).refs
        files = [r for r in refs if not r.startswith("#")]
        assert sorted(files) == sorted(
            ["heatmaps/clip%231_f3.png"] * 2 + ["timelines/clip%2050%25.png"] * 2
        )  # each image and its link, URL-quoted where a name would read as URL syntax
        for r in set(files):
            assert (where / urllib.parse.unquote(r)).is_file()
        assert not any(r.startswith(("http:", "https:", "//", "/")) for r in refs)
        # In-page anchors point at sections that exist.
        page = case_report.render(report, str(where))
        assert all(f'id="{r[1:]}"' in page for r in refs if r.startswith("#"))


def test_the_page_names_the_evidence_and_what_decided_the_verdicts(tmp_path):
    page = case_report.render(_report(tmp_path / "out"), str(tmp_path / "out"))
    text = "".join(_parse(page).text)
    for needle in (
        SHA,  # the full hash of the scored file, not only its prefix
        "cd" * 32,  # the checkpoint's state
        "f" * 40 + " (with uncommitted changes",
        "python -m ldattn_jax.predict 'a b.mp4'",  # the command, shell-quoted
        "0.4515 (eval/v/metrics.json)",
        "fitted on 6 real + 24 fake videos",
        "0.8125", "0.6100", "few frames: weak evidence", "not scored (truncated)",
        "1 (decides the video)", "100, 0, 160, 60",
        "from step 0: ldattn_jax 0.1.0, code eeeeeeeeeeee, jax 0.10.2",
        "from step 300: ldattn_jax 0.1.0, code dddddddddddd with changes",
    ):  # fmt: skip
        assert needle in text, needle
    assert "2 video(s), 1 scored, 1 fake" in text
    # Without calibration no even-odds column, and the page says the score is uncalibrated.
    plain = case_report.render(_report(tmp_path / "p", calibrated=False), str(tmp_path / "p"))
    assert "<th>at even odds</th>" in page and "<th>at even odds</th>" not in plain
    assert "not a frequency to quote" in "".join(_parse(plain).text)


def test_the_command_rewrites_the_page_from_predictions_json(tmp_path, capsys):
    out = tmp_path / "out"
    report = _report(out)
    (out / "predictions.json").write_text(json.dumps(report))
    assert case_report.main([str(out / "predictions.json")]) == 0
    assert (out / "report.html").read_text() == case_report.render(report, str(out))
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert not any(p.endswith(".tmp") for p in os.listdir(out))
    for bad, why in (("missing.json", "No such file"), ("notjson", "Expecting value"),
                     ("list.json", "no 'videos' list")):  # fmt: skip
        path = tmp_path / bad
        if bad != "missing.json":
            path.write_text("[1]" if bad == "list.json" else "not json")
        assert case_report.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"case_report: error: {path}") and why in err and err.count("\n") == 1


@pytest.mark.parametrize("field", ["sha256", "provenance"])
def test_an_older_predictions_json_still_renders(tmp_path, field):
    report = _report(tmp_path / "out")
    if field == "sha256":
        del report["videos"][0]["sha256"], report["videos"][0]["size_bytes"]
    else:
        del report["provenance"], report["checkpoint"]["state_sha256"]
    text = "".join(_parse(case_report.render(report, str(tmp_path / "out"))).text)
    assert "not recorded" in text.lower()


def test_a_damaged_predictions_json_says_where_the_scores_are_and_what_to_run(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    text = json.dumps(_report(tmp_path / "figs"))
    (out / "predictions.json").write_text(text[: len(text) // 2])  # an older predict, killed
    (out / "predictions.jsonl").write_text("")
    assert case_report.main([str(out / "predictions.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and "cut short" in err
    assert f"the scores are in {out / 'predictions.jsonl'} (predict's journal)" in err
    assert "rerun the same predict command, which reuses the journaled scores" in err
    assert not (out / "report.html").exists()
