"""report: our evaluations beside the paper's tables, with the right table for each."""

import json

import numpy as np
import pytest

from ldattn_jax import metrics, paper_tables, report


def _doc(
    dataset, comps=("c23",), model="lda_st", separation=0.4, methods=paper_tables.FFPP_METHODS
):
    rng = np.random.default_rng(0)
    rows = []
    for comp in comps:
        for method, label in [("real", 0)] + [(m, 1) for m in methods]:
            for v in range(8):
                for f in range(4):
                    rows.append((f"{dataset}/{comp}/{method}/{v:03d}", label, method, comp, f))
    ids, labels, meths, cs, frames = map(np.array, zip(*rows, strict=True))
    cols = {
        "video_id": ids,
        "label": labels,
        "score": np.clip(rng.normal(0.5 + (labels - 0.5) * separation, 0.2), 0, 1),
        "method": meths,
        "compression": cs,
        "frame_index": frames,
    }
    doc, _ = metrics.metrics_document(
        cols,
        dataset=dataset,
        split="test",
        model=model,
        checkpoint_step=120,
        checkpoint_which="best",
        config_sha256="c",
        shards_sha256="s",
    )
    return doc


def _eval_dir(root, name, doc, *, trained=None):
    """A run's workdir with one evaluation; ``trained``: summary.json args of its shards."""
    workdir = root / "run"
    out = workdir / "eval" / name
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(doc))
    data = root / "shards"
    (workdir / "config.json").write_text(json.dumps({"data": {"dir": str(data)}}))
    if trained is not None:
        data.mkdir()
        (data / "summary.json").write_text(json.dumps({"args": trained}))
    return str(out)


def test_ffpp_lq_rows_are_tables_i_iii_and_iv_and_the_verdict_reads_the_interval(tmp_path):
    doc = _doc("ffpp", comps=("c40",))
    path = _eval_dir(
        tmp_path, "ffpp_test_120", doc, trained={"dataset": "ffpp", "compression": "c40"}
    )
    (entry,) = report.report([path])
    assert entry["trained_on"]["dataset"] == "ffpp" and entry["trained_on"]["compression"] == "c40"
    rows = {(r["table"], r["subset"], r["metric"]): r for r in entry["rows"]}
    auc = rows[("I", "FF++ LQ (c40), all methods", "AUC")]
    assert auc["paper"] == paper_tables.TABLE_I["c40"]["lda_st"]["auc"] == 0.9849
    assert auc["ours"] == doc["frame"]["auc"] and list(auc["ci95"]) == doc["frame"]["auc_ci95"]
    # Scores separated by 0.4 with sd 0.2: an AUC near 0.9, far below the paper's.
    assert auc["ci95"][1] < 0.9849 and auc["verdict"] == "paper above"
    nt = rows[("IV", "real + NeuralTextures (c40)", "AUC")]
    assert (
        nt["paper"] == 0.9631 and nt["ours"] == doc["per_method"]["NeuralTextures"]["video"]["auc"]
    )
    assert rows[("III", "real + Deepfakes (c40)", "ACC")]["paper"] == 0.9947
    acc = rows[("III", "real + Deepfakes (c40)", "ACC")]
    assert list(acc["ci95"]) == doc["per_method"]["Deepfakes"]["frame"]["acc_ci95"]
    assert acc["verdict"] == report.verdict(0.9947, acc["ci95"]) != "-"
    assert len(entry["rows"]) == 2 + 4 * 2 * 2  # Table I; III and IV per method, ACC + AUC
    text = report.format_report([entry])
    verdicts = [r["verdict"] for r in entry["rows"] if r["metric"] == "AUC"]
    # Video scores average 4 frames: well separated, so the paper's lower
    # video-level AUCs (Table IV) lie below our intervals.
    assert verdicts.count("paper below") == 4 and nt["verdict"] == "paper below"
    assert "paper AUCs against our 95% intervals: 0 of 9 inside, 5 above" in text
    assert "Table III does not say which compression it used" in text


def test_verdict_places_the_papers_figure_against_our_interval():
    assert report.verdict(0.95, (0.93, 0.97)) == "inside"
    assert report.verdict(0.93, (0.93, 0.97)) == "inside"  # the bounds belong to it
    assert report.verdict(0.99, (0.93, 0.97)) == "paper above"
    assert report.verdict(0.90, (0.93, 0.97)) == "paper below"
    assert report.verdict(0.90, None) == "-"


def test_hq_runs_get_tables_i_and_viii_and_variants_table_viii_only(tmp_path):
    for model, table in (("lda_st", "I, VIII"), ("lda_spatial", "VIII")):
        doc = _doc("ffpp", comps=("c23",), model=model)
        path = _eval_dir(tmp_path / model, "ffpp_test_120", doc)  # shards not at hand
        (entry,) = report.report([path])
        assert entry["trained_on"]["from"].startswith("the run's own shards")
        auc = next(r for r in entry["rows"] if r["metric"] == "AUC" and r["table"] == table)
        assert auc["paper"] == paper_tables.TABLE_VIII[model]["auc"]
        assert auc["subset"] == "FF++ HQ (c23), all methods"
        # Table IV is LQ only; Table III holds lda_st and xception only.
        assert not any(r["table"] == "IV" for r in entry["rows"])
        assert any(r["table"] == "III" for r in entry["rows"]) == (model == "lda_st")


def test_celebdf_is_table_ii_or_vi_by_what_the_run_trained_on(tmp_path):
    doc = _doc("celebdf", comps=("raw",), methods=("Celeb-synthesis",))
    own = _eval_dir(tmp_path / "a", "celebdf_test_120", doc)
    cross = _eval_dir(
        tmp_path / "b",
        "celebdf_test_120_data0123abcd",
        doc,
        trained={"dataset": "ffpp", "compression": "c23"},
    )
    unknown = _eval_dir(tmp_path / "c", "celebdf_test_120_data0123abcd", doc)
    a, b, c = report.report([own, cross, unknown])
    assert {r["table"] for r in a["rows"]} == {"II"}
    assert [(r["table"], r["metric"], r["paper"]) for r in b["rows"]] == [("VI", "AUC", 0.7033)]
    assert c["rows"] == [] and "pass --trained-on" in c["notes"][0]
    # evaluate records what the run trained on: no shards needed then.
    recorded = _eval_dir(
        tmp_path / "d",
        "celebdf_test_120_data0123abcd",
        {**doc, "trained_on": {"dataset": "ffpp", "compression": "c40"}},
    )
    (d,) = report.report([recorded])
    assert d["rows"][0]["table"] == "VI" and d["trained_on"]["from"] == "metrics.json trained_on"
    (forced,) = report.report([unknown], trained_on="ffpp")
    assert forced["rows"][0]["table"] == "VI" and forced["trained_on"]["from"] == "--trained-on"


def test_what_the_paper_does_not_report_is_said_not_invented(tmp_path):
    # FF++ c40 test of a c23-trained run: the paper trains and tests at one compression.
    doc = _doc("ffpp", comps=("c40",))
    path = _eval_dir(
        tmp_path / "x",
        "ffpp_test_120_data0123abcd",
        doc,
        trained={"dataset": "ffpp", "compression": "c23"},
    )
    (entry,) = report.report([path])
    assert entry["rows"] == [] and "trains and tests at one compression" in entry["notes"][0]
    # Both compressions pooled: Table I per compression, no per-method rows.
    (pooled,) = report.report(
        [_eval_dir(tmp_path / "y", "ffpp_test_120", _doc("ffpp", comps=("c23", "c40")))]
    )
    assert {r["table"] for r in pooled["rows"]} == {"I, VIII", "I"}
    assert any("need one compression per evaluation" in n for n in pooled["notes"])
    (dfdc,) = report.report(
        [
            _eval_dir(
                tmp_path / "z", "dfdc_test_120", _doc("dfdc", comps=("raw",), methods=("fake",))
            )
        ]
    )
    assert dfdc["rows"] == [] and dfdc["notes"] == ["the paper reports no dfdc results"]


def test_cli_writes_json_and_names_a_bad_path(tmp_path, capsys):
    path = _eval_dir(tmp_path, "ffpp_test_120", _doc("ffpp", comps=("c40",)))
    out = tmp_path / "report.json"
    assert report.main([path, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lda_st step 120 on ffpp test, trained on ffpp c40" in printed
    assert json.loads(out.read_text())[0]["rows"][0]["table"] == "I"
    assert report.main([path, "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    i = md.index("| table | subset | level | metric | paper | ours | ours 95% CI | paper vs ours |")
    assert md[i + 1] == "| --- | --- | --- | --- | --- | --- | --- | --- |"
    assert md[i + 2].startswith("| I | FF++ LQ (c40), all methods | frame | ACC | 0.9581 | ")
    assert report.main([str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("report: error: ") and "nope not found" in err
    (tmp_path / "bad.json").write_text("{}")
    assert report.main([str(tmp_path / "bad.json")]) == 1
    assert "not a metrics.json of evaluate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "table", ["TABLE_I", "TABLE_II", "TABLE_III", "TABLE_IV", "TABLE_VI", "TABLE_VIII"]
)
def test_paper_figures_are_fractions(table):
    def leaves(d):
        for v in d.values():
            yield from leaves(v) if isinstance(v, dict) else [v]

    assert all(0.4 < x <= 1.0 for x in leaves(getattr(paper_tables, table)))
