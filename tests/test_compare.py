"""compare: a paired bootstrap of two detectors' AUCs on the same videos, from their files."""

import csv
import json
import shutil

import numpy as np
import pytest

from ldattn_jax import compare, metrics


def _detectors(seed=0, n=200, gain=0.3):
    """Two detectors on the same videos: each video has a difficulty both meet;
    B separates the classes better by `gain` (0: the same detector, other noise)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    hard = rng.normal(0, 1.0, n)  # shared by both: the video itself
    a = hard + 0.8 * labels + rng.normal(0, 0.3, n)
    b = hard + (0.8 + gain) * labels + rng.normal(0, 0.3, n)
    return labels, 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))


def test_pairing_shows_a_difference_that_two_intervals_do_not():
    labels, a, b = _detectors()
    r = metrics.paired_auc_difference(labels, a, b)
    assert r["delta"] == pytest.approx(r["auc_b"] - r["auc_a"]) and r["delta"] > 0
    lo, hi = r["delta_ci95"]
    assert 0 < lo < r["delta"] < hi and r["p_value"] < 0.01
    # The separate intervals overlap, yet the paired one excludes 0.
    (alo, ahi), (blo, bhi) = metrics.auc_ci(labels, a), metrics.auc_ci(labels, b)
    assert blo < ahi
    assert hi - lo < 0.6 * ((ahi - alo) + (bhi - blo))
    same = metrics.paired_auc_difference(labels, a, a)
    assert same["delta"] == 0 and same["delta_ci95"] == [0.0, 0.0] and same["p_value"] == 1.0


def test_no_real_difference_is_rarely_called_one():
    # Same detector, two noise draws: the 95% test should reject ~5% of the time.
    rejected = 0
    for seed in range(60):
        labels, a, b = _detectors(seed, n=120, gain=0.0)
        r = metrics.paired_auc_difference(labels, a, b, resamples=300, seed=seed)
        rejected += r["p_value"] < 0.05
    assert rejected <= 8, rejected


def _write(path, rows, fields):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_cli_matches_rows_by_video_not_by_order(tmp_path, capsys):
    labels, a, b = _detectors()
    ids = [f"ffpp/c23/{'real' if y == 0 else 'Deepfakes'}/{i:03d}" for i, y in enumerate(labels)]
    run = tmp_path / "eval_a"
    run.mkdir()
    fields = ["video_id", "label", "method", "compression", "num_frames", "score"]
    rows = [
        {"video_id": v, "label": y, "method": "m", "compression": "c23", "num_frames": 4,
         "score": repr(float(s))}
        for v, y, s in zip(ids, labels, a, strict=True)
    ]  # fmt: skip
    _write(run / "video_scores.csv", rows, fields)
    # Another tool's scores, in another order and with only the needed columns.
    order = np.random.default_rng(1).permutation(len(ids))
    other = tmp_path / "other.csv"
    rows = [{"video_id": ids[i], "label": labels[i], "score": repr(float(b[i]))} for i in order]
    _write(other, rows, ["video_id", "label", "score"])
    out = tmp_path / "cmp.json"
    assert compare.main([str(run), str(other), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    want = metrics.paired_auc_difference(labels, a, b)
    assert got["delta"] == pytest.approx(want["delta"], abs=1e-12)
    assert got["delta_ci95"] == pytest.approx(want["delta_ci95"], abs=1e-12)
    assert got["counts"] == {"real": 100, "fake": 100} and got["level"] == "video"
    text = capsys.readouterr().out
    assert "B - A  +" in text and "the AUCs differ at 95%" in text
    # A against itself: no difference claimed.
    assert compare.main([str(run), str(run / "video_scores.csv")]) == 0
    assert "are not shown to differ" in capsys.readouterr().out


def test_frame_level_pairs_frames_and_resamples_videos(tmp_path):
    rng = np.random.default_rng(0)
    rows_a, rows_b, labels, sa, sb, vids = [], [], [], [], [], []
    for v in range(40):
        y = v % 2
        for f in (0, 8, 16):
            s_a, s_b = rng.uniform(0.3, 0.7) + 0.1 * y, rng.uniform(0.2, 0.6) + 0.3 * y
            rows_a.append({"video_id": f"v{v}", "frame_index": f, "label": y, "score": repr(s_a)})
            # The other tool writes frame numbers as floats.
            rows_b.append({"video_id": f"v{v}", "frame_index": f"{f}.0", "label": y,
                           "score": repr(s_b)})  # fmt: skip
            labels.append(y), sa.append(s_a), sb.append(s_b), vids.append(f"v{v}")
    fields = ["video_id", "frame_index", "label", "score"]
    _write(tmp_path / "a.csv", rows_a, fields)
    _write(tmp_path / "b.csv", rows_b[::-1], fields)
    got = compare.compare(str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "frame")
    order = np.lexsort((np.array([r["frame_index"] for r in rows_a]).astype(str), vids))
    want = metrics.paired_auc_difference(
        np.array(labels)[order], np.array(sa)[order], np.array(sb)[order], np.array(vids)[order]
    )
    assert got["delta_ci95"] == pytest.approx(want["delta_ci95"], abs=1e-12)
    assert got["videos"] == 40 and got["counts"] == {"real": 60, "fake": 60}


def _ids_csv(path, ids, label=lambda i: i % 2, score=0.5):
    rows = [{"video_id": f"v{i}", "label": label(i), "score": score} for i in ids]
    _write(path, rows, ["video_id", "label", "score"])


def test_scores_of_different_videos_or_labels_are_refused(tmp_path, capsys):
    a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    _ids_csv(a, range(6))
    _ids_csv(b, range(1, 7))
    assert compare.main([a, b]) == 2
    err = capsys.readouterr().err
    assert "B lacks 1 of A's 6 entries (e.g. v0)" in err and "A lacks 1 of B's (e.g. v6)" in err
    _ids_csv(b, range(6), label=lambda i: 1 - i % 2)
    assert compare.main([a, b]) == 2
    assert "6 entries have other labels" in capsys.readouterr().err
    assert compare.main([a, b, "--level", "frame"]) == 2
    assert "lacks the column(s) ['frame_index']" in capsys.readouterr().err
    assert compare.main([a, str(tmp_path / "nowhere")]) == 2
    assert "nowhere not found" in capsys.readouterr().err
    _ids_csv(b, range(6), score=3.0)
    assert compare.main([a, b]) == 2
    assert "probabilities in [0, 1]" in capsys.readouterr().err
    # One fake video: every resample redraws it, so no difference can be tested.
    _ids_csv(a, range(3), label=lambda i: int(i == 0))
    _ids_csv(b, range(3), label=lambda i: int(i == 0), score=0.7)
    assert compare.main([a, b]) == 2
    assert "1 fake video: a 95% interval needs at least 2" in capsys.readouterr().err


def _lines(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


@pytest.mark.parametrize(
    "body, why",
    [
        ("v0,0,0.1\nv1\n", ":3: the row has 1 field(s), the header 3"),
        ("v0,0,0.1\nv1,1,0.9,7\n", ":3: the row has 4 field(s), the header 3"),
        ("v0,0,0.1\nv1,0.5,0.9\n", ":3: label '0.5' is neither 0 (real) nor 1 (fake)"),
        ("v0,0,0.1\n,1,0.9\n", ":3: the video_id is empty"),
        ("v0,0,0.1\nv1,1,high\n", ":3: score 'high' is not a number"),
        ("v0,0,0.1\nv1,1,nan\n", ":3: score 'nan' is not a finite number"),
        ("v0,0,-inf\nv1,1,0.9\n", ":2: score '-inf' is not a finite number"),
    ],
)
def test_a_bad_row_is_named_by_file_and_line(tmp_path, capsys, body, why):
    good = _lines(tmp_path / "a.csv", "video_id,label,score\nv0,0,0.1\nv1,1,0.9\n")
    bad = _lines(tmp_path / "b.csv", "video_id,label,score\n" + body)
    assert compare.main([good, bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"compare: error: {bad}{why}") and err.count("\n") == 1


def test_a_whole_frame_index_only(tmp_path, capsys):
    head = "video_id,frame_index,label,score\n"
    a = _lines(tmp_path / "a.csv", head + "v0,0,0,0.1\nv1,0,1,0.9\n")
    b = _lines(tmp_path / "b.csv", head + "v0,0,0,0.1\nv1,0.5,1,0.9\n")
    assert compare.main([a, b, "--level", "frame"]) == 2
    assert f"{b}:3: frame_index '0.5' is not a whole number" in capsys.readouterr().err


def test_encodings_excel_bom_is_read_other_than_utf8_refused(tmp_path, capsys):
    text = "video_id,label,score\nv0,0,0.1\nv1,1,0.9\nv2,0,0.3\nv3,1,0.6\n"
    a = _lines(tmp_path / "a.csv", text)
    bom = _lines(tmp_path / "bom.csv", text, encoding="utf-8-sig")  # as Excel saves it
    assert compare.main([a, bom]) == 0
    capsys.readouterr()
    latin = _lines(tmp_path / "latin.csv", text.replace("v3", "vidéo3"), encoding="latin-1")
    assert compare.main([a, latin]) == 2
    err = capsys.readouterr().err
    assert f"{latin}:5: not UTF-8 text (byte 0xe9): save the CSV as UTF-8" in err


def test_wrong_files_get_what_to_pass_instead(tmp_path, capsys):
    run = tmp_path / "eval"
    run.mkdir()
    _lines(run / "metrics.json", "{}")
    frames = "video_id,frame_index,label,score\nv0,0,0,0.1\nv0,8,0,0.2\nv1,0,1,0.9\n"
    _lines(run / "scores.csv", frames)
    assert compare.main([str(run / "metrics.json"), str(run / "scores.csv")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json is JSON: pass the evaluate directory or its scores CSV" in err
    assert compare.main([str(run / "scores.csv"), str(run / "scores.csv")]) == 2
    err = capsys.readouterr().err
    assert "scores.csv:3: v0 appears twice; ids must be unique" in err
    assert "(one row per frame? pass --level frame)" in err


@pytest.mark.parametrize("where", ["missing/out.json", "."])
def test_an_unwritable_json_out_is_refused_before_the_work(tmp_path, capsys, where):
    a = _lines(tmp_path / "a.csv", "video_id,label,score\nv0,0,0.1\nv1,1,0.9\n")
    out = tmp_path / where
    assert compare.main([a, a, "--json", str(out)]) == 2
    got = capsys.readouterr()
    assert got.out == "" and got.err.startswith(f"compare: error: --json {out}")
    assert ("does not exist" if where != "." else "is a directory") in got.err


def _eval_dir(path, scores, labels, **doc):
    """An evaluate output directory: video_scores.csv and the metrics.json keys compare reads."""
    path.mkdir(parents=True)
    rows = [{"video_id": f"v{i}", "label": int(y), "score": float(s)}
            for i, (y, s) in enumerate(zip(labels, scores, strict=True))]  # fmt: skip
    _write(path / "video_scores.csv", rows, ["video_id", "label", "score"])
    (path / "metrics.json").write_text(json.dumps(doc))
    return str(path)


def _doc(state, shards="s1", dtype="float32", commit="a" * 40, dirty=False):
    return {
        "model": "lda_st", "compute_dtype": dtype, "shards_sha256": shards,
        "checkpoint": {"step": 552, "which": "best", "state_sha256": state},
        "provenance": {"git_commit": commit, "git_dirty": dirty},
    }  # fmt: skip


def test_each_side_names_its_run_and_a_shared_origin_is_said(tmp_path, capsys):
    labels, a, b = _detectors(n=60)
    run_a = _eval_dir(tmp_path / "a", a, labels, **_doc("1" * 64))
    run_b = _eval_dir(tmp_path / "b", b, labels, **_doc("1" * 64, dtype="bfloat16", dirty=True))
    assert compare.main([run_a, run_b, "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "(lda_st step 552, float32, weights 111111111111…, code aaaaaaa)" in out
    assert "(lda_st step 552, bfloat16, weights 111111111111…, code aaaaaaa with changes)" in out
    assert "note: A and B are the same weights (state sha256 111111111111…) in float32 and " \
        "bfloat16: a difference is not one of training" in out  # fmt: skip
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["run_b"]["compute_dtype"] == "bfloat16" and len(saved["notes"]) == 1
    # Other weights on another build of the same videos: the data is named as a cause.
    run_c = _eval_dir(tmp_path / "c", b, labels, **_doc("2" * 64, shards="s2"))
    r = compare.compare(run_a, run_c)
    assert r["notes"] == [
        "A and B scored other builds of these videos (shards_sha256 differ: other crops, size "
        "or frames): a difference may come from the data, not the detectors"
    ]
    # Another tool's CSV (or a CSV beside no metrics.json) has no run to name: nothing said.
    csv_b = tmp_path / "tool.csv"
    shutil.copy(tmp_path / "b" / "video_scores.csv", csv_b)
    r = compare.compare(run_a, str(csv_b))
    assert r["run_b"] is None and r["notes"] == []
    # The CSV inside an evaluate directory is that run's.
    assert compare.compare(str(tmp_path / "a" / "video_scores.csv"), run_b)["run_a"]["step"] == 552


def test_two_perfect_detectors_cannot_be_told_apart_not_p_1(tmp_path, capsys):
    # The demo's test split: 6 real + 24 fake videos, both detectors rank every pair
    # right. Every resample then gives 1 and 1: "+0.0000 [+0.0000, +0.0000] p = 1"
    # and "AUC 1.0000 [1.0000, 1.0000]" whatever the number of videos.
    labels = np.array([0] * 6 + [1] * 24)
    a = np.where(labels == 1, 0.9, 0.1) + np.linspace(0, 0.05, 30)
    run_a = _eval_dir(tmp_path / "a", a, labels, **_doc("1" * 64))
    run_b = _eval_dir(tmp_path / "b", a**2, labels, **_doc("2" * 64))
    assert compare.main([run_a, run_b, "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    bound = metrics.separation_bound(6)
    assert f"AUC 1.0000 [{bound:.4f}, 1.0000]" in out and "[1.0000, 1.0000]" not in out
    assert "p = n/a: cannot tell: the AUCs are not shown to differ" in out
    assert "cannot tell these AUCs apart on 6 real and 24 fake videos" in out
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["p_value"] is None and saved["auc_a_ci95"] == pytest.approx([bound, 1.0])
    assert saved["delta_ci95"] == pytest.approx([bound - 1, 1 - bound])


def test_fingerprints_of_different_versions_are_not_called_other_builds(tmp_path):
    labels, a, b = _detectors(n=60)
    old = _doc("1" * 64, shards="s1")  # a metrics.json of before versions were recorded
    new = _doc("2" * 64, shards="s2") | {"shards_fingerprint_version": 2}
    run_a = _eval_dir(tmp_path / "a", a, labels, **old)
    run_b = _eval_dir(tmp_path / "b", b, labels, **new)
    (note,) = compare.compare(run_a, run_b)["notes"]
    assert "data fingerprints of different versions (1 and 2;" in note
    assert "other builds" not in note
    run_c = _eval_dir(tmp_path / "c", b, labels, **_doc("3" * 64, shards="s3") | {
        "shards_fingerprint_version": 2})  # fmt: skip
    (note,) = compare.compare(run_b, run_c)["notes"]
    assert note.startswith("A and B scored other builds")
