"""report: our evaluations beside the paper's tables, with the right table for each."""

import functools
import json

import numpy as np
import pytest

from ldattn_jax import metrics, paper_tables, report


def _doc(dataset, comps=("c23",), model="lda_st", methods=paper_tables.FFPP_METHODS):
    """A fresh copy (tests change theirs) of `_computed_doc`."""
    return json.loads(_computed_doc(dataset, tuple(comps), model, tuple(methods)))


@functools.cache  # the bootstrap intervals take a while; many tests share a document
def _computed_doc(dataset, comps, model, methods, separation=0.4):
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
    return json.dumps(doc)


def _eval_dir(root, name, doc, *, trained=None, model=None):
    """A run's workdir with one evaluation; ``trained``: summary.json args of its shards;
    ``model``: its config.json's model section."""
    workdir = root / "run"
    out = workdir / "eval" / name
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(doc))
    data = root / "shards"
    config = {"data": {"dir": str(data)}, **({"model": model} if model is not None else {})}
    (workdir / "config.json").write_text(json.dumps(config))
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
    # Video scores average 4 frames: every method's 8 fakes lie above its 8 reals.
    # A perfect ranking is the same in every bootstrap resample, so the percentile
    # interval would be [1, 1] and every paper figure "below" it: a claim to beat
    # the paper on 8 real videos. Its interval is the exact bound instead.
    table_iv = [r for r in entry["rows"] if r["table"] == "IV" and r["metric"] == "AUC"]
    bound = metrics.separation_bound(8)
    assert [r["ours"] for r in table_iv] == [1.0] * 4
    assert all(r["ci95"] == pytest.approx((bound, 1.0)) for r in table_iv)
    assert bound == pytest.approx(0.025 ** (1 / 8)) and bound < 0.9631 == nt["paper"]
    assert "paper below" not in verdicts and nt["verdict"] == "inside"
    assert "paper AUCs against our 95% intervals: 4 of 9 inside, 5 above" in text
    assert "0 below" in text
    assert "Table III does not say which compression it used, nor whether one model" in text


def test_verdict_places_the_papers_figure_against_our_interval():
    assert report.verdict(0.95, (0.93, 0.97)) == "inside"
    assert report.verdict(0.93, (0.93, 0.97)) == "inside"  # the bounds belong to it
    assert report.verdict(0.99, (0.93, 0.97)) == "paper above"
    assert report.verdict(0.90, (0.93, 0.97)) == "paper below"
    assert report.verdict(0.90, None) == "-"
    # A point "interval" (every resample agreed: a perfect ranking in a metrics.json of
    # an older evaluate) bounds nothing: neither above nor below.
    assert report.verdict(0.9988, (1.0, 1.0)) == report.CANNOT_TELL == "cannot tell"
    assert report.verdict(1.0, (1.0, 1.0)) == "cannot tell"


def test_a_point_interval_of_an_older_evaluate_is_counted_as_cannot_tell(tmp_path):
    doc = _doc("ffpp", comps=("c40",))
    for method in paper_tables.FFPP_METHODS:  # as evaluate wrote a perfect ranking before
        doc["per_method"][method]["video"]["auc_ci95"] = [1.0, 1.0]
    path = _eval_dir(
        tmp_path, "ffpp_test_120", doc, trained={"dataset": "ffpp", "compression": "c40"}
    )
    (entry,) = report.report([path])
    iv = [r for r in entry["rows"] if r["table"] == "IV" and r["metric"] == "AUC"]
    assert [r["verdict"] for r in iv] == ["cannot tell"] * 4
    text = report.format_report([entry])
    assert (
        "0 of 9 inside, 5 above (not reproduced on these test sets), 0 below, 4 cannot tell" in text
    )


def test_hq_runs_get_tables_i_and_viii_and_variants_table_viii_only(tmp_path):
    for model, table in (("lda_st", "I, VIII, IX, X"), ("lda_spatial", "VIII")):
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
    assert {r["table"] for r in a["rows"]} == {"II", "XI"}
    xi = next(r for r in a["rows"] if r["table"] == "XI")  # ACC only: its metric is unnamed
    assert (xi["metric"], xi["paper"], xi["ours"]) == ("ACC", 0.9913, doc["frame"]["acc"])
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
    assert {r["table"] for r in pooled["rows"]} == {"I, VIII, IX, X", "I"}
    assert any("need one compression per evaluation" in n for n in pooled["notes"])
    (dfdc,) = report.report(
        [
            _eval_dir(
                tmp_path / "z", "dfdc_test_120", _doc("dfdc", comps=("raw",), methods=("fake",))
            )
        ]
    )
    assert dfdc["rows"] == [] and dfdc["notes"] == ["the paper reports no dfdc results"]
    # A build of other methods (data_prep.build --methods): no all-methods row, said;
    # the per-method rows of the methods it has still compare.
    for name, methods, why in (
        ("df", ("Deepfakes",), "lacks Face2Face, FaceSwap, NeuralTextures"),
        ("fsh", (*paper_tables.FFPP_METHODS, "FaceShifter"), "adds FaceShifter"),
    ):
        doc = _doc("ffpp", comps=("c23",), methods=methods)
        (entry,) = report.report([_eval_dir(tmp_path / name, "ffpp_test_120", doc)])
        assert not any("all methods" in r["subset"] for r in entry["rows"]), name
        assert any(why in n and "not the paper's all-methods" in n for n in entry["notes"])
        assert {r["table"] for r in entry["rows"]} == {"III"}
    # A sweep run too (Table IX pools the four methods).
    doc = _doc("ffpp", comps=("c23",), methods=("Deepfakes", "FaceSwap"))
    doc["model_settings"] = {"name": "lda_st", "num_maps": 2}
    (entry,) = report.report([_eval_dir(tmp_path / "m2df", "ffpp_test_120", doc)])
    assert entry["rows"] == [] and "Table IX pools FF++'s four methods" in entry["notes"][0]


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
    # Bad input exits 2, as predict and compare do.
    assert report.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: error: ") and "nope not found" in err
    (tmp_path / "bad.json").write_text("{}")
    assert report.main([str(tmp_path / "bad.json")]) == 2
    assert "not a metrics.json of evaluate" in capsys.readouterr().err


def test_recorded_training_data_wins_over_trained_on(tmp_path):
    # A c40 test of a c23-trained run: the flag must not drop the recorded c23.
    doc = _doc("ffpp", comps=("c40",))
    recorded = _eval_dir(
        tmp_path / "a",
        "ffpp_test_120_data0123abcd",
        {**doc, "trained_on": {"dataset": "ffpp", "compression": "c23"}},
    )
    (agrees,) = report.report([recorded], trained_on="ffpp")
    assert agrees["trained_on"] == {
        "dataset": "ffpp",
        "compression": "c23",
        "from": "metrics.json trained_on",
    }
    assert agrees["rows"] == [] and "trains and tests at one compression" in agrees["notes"][0]
    (disagrees,) = report.report([recorded], trained_on="celebdf")
    assert disagrees["trained_on"]["dataset"] == "ffpp" and disagrees["rows"] == []
    assert disagrees["notes"][0].startswith(
        "--trained-on celebdf ignored: metrics.json trained_on records ffpp c23"
    )
    # No trained_on in metrics.json, but the run's shards at hand: they win too.
    shards = _eval_dir(
        tmp_path / "b",
        "celebdf_test_120_data0123abcd",
        _doc("celebdf", comps=("raw",), methods=("Celeb-synthesis",)),
        trained={"dataset": "ffpp", "compression": "c23"},
    )
    (b,) = report.report([shards], trained_on="celebdf")
    assert [r["table"] for r in b["rows"]] == ["VI"] and "ignored" in b["notes"][0]
    # Nothing recorded: the flag says, over the guess from the directory's name.
    guessed = _eval_dir(tmp_path / "c", "celebdf_test_120", _doc("celebdf", comps=("raw",)))
    (c,) = report.report([guessed], trained_on="ffpp")
    assert c["trained_on"]["from"] == "--trained-on" and c["rows"][0]["table"] == "VI"


@pytest.mark.parametrize(
    "split, why",
    [
        ("val", "split val: the paper's tables are test-split results"),
        ("train", "split train: the paper's tables are test-split results"),
        ("test+val", "split test+val pools test with val"),
        (None, "metrics.json records no split"),
    ],
)
def test_only_test_splits_are_put_beside_the_paper(tmp_path, split, why):
    doc = _doc("ffpp", comps=("c23",))
    other = {k: v for k, v in doc.items() if k != "split"}
    if split is not None:
        other["split"] = split
    test = _eval_dir(tmp_path, "ffpp_test_120", doc)
    # Another run: not the same evaluation as the test one whatever its split.
    off = _eval_dir(tmp_path / "other", "ffpp_x_120", other)
    a, b = report.report([test, off])
    assert a["rows"] and b["rows"] == [] and why in b["notes"][0]
    # The count is of the test evaluation's AUCs alone.
    count = report.format_report([a, b]).splitlines()[-1]
    assert count.startswith("paper AUCs") and count == report.format_report([a]).splitlines()[-1]


def test_each_evaluation_is_counted_once(tmp_path):
    doc = _doc("ffpp", comps=("c23",))
    plain = _eval_dir(tmp_path, "ffpp_test_120", doc)
    # The same run, checkpoint and data at another threshold and dtype.
    t03 = _eval_dir(tmp_path, "ffpp_test_120_t0.3", {**doc, "threshold": 0.3})
    bf16 = _eval_dir(tmp_path, "ffpp_test_120_bfloat16", {**doc, "compute_dtype": "bfloat16"})
    (one,) = report.report([plain])
    n = sum(r["metric"] == "AUC" for r in one["rows"])
    alone = report.format_report([one]).splitlines()[-1]
    assert f"of {n} inside" in alone
    entries = report.report([plain, f"{plain}/metrics.json", t03, bf16, plain + "/"])
    assert [e["eval"] for e in entries] == [plain, t03, bf16]
    again = f"given again as {plain}/metrics.json: reported and counted once"
    assert again in entries[0]["notes"] and f"given again as {plain}/:" in entries[0]["notes"][-1]
    assert [e["counted_with"] for e in entries] == [None, plain, plain]
    assert "its AUCs are not counted again" in entries[1]["notes"][-1]
    assert report.format_report(entries).splitlines()[-1] == alone
    # Another run's evaluation of the same step and data is a measurement of its own.
    other = _eval_dir(tmp_path / "seed2", "ffpp_test_120", doc)
    both = report.report([plain, other])
    assert f"of {2 * n} inside" in report.format_report(both).splitlines()[-1]


def _without(d, *keys):
    """``d`` without the nested key ``keys``."""
    d = json.loads(json.dumps(d))
    node = d
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    return d


@functools.cache
def _broken_docs():
    doc = _doc("ffpp", comps=("c23",))
    bad_ci = json.loads(json.dumps(doc))
    bad_ci["per_compression"]["c23"]["frame"]["auc_ci95"] = 0.9
    return {
        "number": (3, "holds a number, not a JSON object"),
        "null": (None, "holds null, not a JSON object"),
        "array": ([doc], "holds an array, not a JSON object"),
        "no threshold": (_without(doc, "threshold"), "lacks ['threshold']"),
        "trained_on without dataset": (
            {**doc, "trained_on": {"compression": "c23"}},
            "has trained_on = {'compression': 'c23'} without a 'dataset' name",
        ),
        "block without auc": (
            _without(doc, "per_compression", "c23", "frame", "auc"),
            "per_compression.c23.frame has no 'auc'",
        ),
        "method block not an object": (
            {**doc, "per_method": {**doc["per_method"], "Deepfakes": [1]}},
            "per_method.Deepfakes.frame is missing or not an object",
        ),
        "interval not a pair": (bad_ci, "c23.frame.auc_ci95 = 0.9 is not a [low, high] pair"),
        "checkpoint a list": ({**doc, "checkpoint": [120]}, "has checkpoint = an array"),
    }


BROKEN = [
    "number",
    "null",
    "array",
    "no threshold",
    "trained_on without dataset",
    "block without auc",
    "method block not an object",
    "interval not a pair",
    "checkpoint a list",
]


@pytest.mark.parametrize("case", BROKEN)
def test_a_malformed_metrics_json_is_one_line_naming_the_file(tmp_path, capsys, case):
    content, why = _broken_docs()[case]
    path = _eval_dir(tmp_path, "ffpp_test_120", content)
    assert report.main([path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"report: error: {path}/metrics.json") and err.count("\n") == 1
    assert why in err and "re-run evaluate with this version" in err


def test_evaluate_writes_every_key_report_reads():
    # report takes a missing optional key for an older file (a note, no error):
    # a key renamed on the writing side would pass silently without this.
    doc = json.loads(_computed_doc("ffpp", ("c23",), "lda_st", paper_tables.FFPP_METHODS))
    assert set(report._REQUIRED) | set(report._OPTIONAL) <= set(doc)
    assert report.schema_problem(doc) is None


def test_a_directory_named_metrics_json_is_one_line(tmp_path, capsys):
    (tmp_path / "ffpp_test_120" / "metrics.json").mkdir(parents=True)
    assert report.main([str(tmp_path / "ffpp_test_120")]) == 2
    err = capsys.readouterr().err
    assert "ffpp_test_120/metrics.json cannot be read (Is a directory)" in err
    assert err.count("\n") == 1


def test_a_threshold_of_unrecorded_source_is_not_called_default(tmp_path):
    doc = _without({**_doc("ffpp", comps=("c23",)), "threshold": 0.3}, "threshold_source")
    (entry,) = report.report([_eval_dir(tmp_path, "ffpp_test_120_t0.3", doc)])
    header = report.format_report([entry]).splitlines()[0]
    assert header.endswith("ACC at threshold 0.3 (source not recorded)")


@pytest.mark.parametrize("where", ["missing/out.json", "."])
def test_an_unwritable_json_out_is_refused_before_the_work(tmp_path, capsys, where):
    path = _eval_dir(tmp_path, "ffpp_test_120", _doc("ffpp", comps=("c23",)))
    out = tmp_path / where
    assert report.main([path, "--json", str(out)]) == 2
    got = capsys.readouterr()
    assert got.out == "" and got.err.startswith(f"report: error: --json {out}")
    assert ("does not exist" if where != "." else "is a directory") in got.err


@pytest.mark.parametrize(
    "table",
    ["TABLE_I", "TABLE_II", "TABLE_III", "TABLE_IV", "TABLE_VI", "TABLE_VIII", "TABLE_IX",
     "TABLE_X", "TABLE_XI"],
)  # fmt: skip
def test_paper_figures_are_fractions(table):
    def leaves(d):
        for v in d.values():
            yield from leaves(v) if isinstance(v, dict) else [v]

    assert all(0.4 < x <= 1.0 for x in leaves(getattr(paper_tables, table)))


def _sweep_entry(
    tmp_path, name, settings, *, dataset="ffpp", comps=("c23",), model="lda_st", trained=None
):
    if dataset == "celebdf":
        doc = _doc("celebdf", comps=("raw",), model=model, methods=("Celeb-synthesis",))
    else:
        doc = _doc(dataset, comps=comps, model=model)
    doc["model_settings"] = {"name": model, **settings}
    (entry,) = report.report(
        [_eval_dir(tmp_path / name, f"{dataset}_test_120", doc, trained=trained)]
    )
    return entry, doc


def test_a_network_other_than_the_papers_meets_its_sweep_row_or_no_table(tmp_path):
    entry, doc = _sweep_entry(tmp_path, "m2", {"num_maps": 2, "image_size": 398})
    assert [(r["table"], r["metric"], r["paper"]) for r in entry["rows"]] == [
        ("IX", "ACC", 0.9935),
        ("IX", "AUC", 0.9962),
    ]  # and not Tables I, III, VIII: they are of m = 4
    assert entry["rows"][1]["ours"] == doc["per_compression"]["c23"]["frame"]["auc"]
    assert entry["rows"][0]["subset"] == "FF++ HQ (c23), all methods, m = 2"
    assert "model.num_maps = 2 (the paper's 4)" in entry["notes"][0]
    entry, _ = _sweep_entry(tmp_path, "n2", {"stack": 2})
    assert {(r["table"], r["paper"]) for r in entry["rows"]} == {("X", 0.9933), ("X", 0.9985)}
    assert any("by its title n would be stack + 1" in n for n in entry["notes"])
    # Off the sweep, two settings at once, another variant, other data: said, not matched.
    for name, settings, kw, why in (
        ("m6", {"num_maps": 6}, {}, "Table IX has m = [1, 2, 3, 4, 5] only"),
        ("m2n2", {"num_maps": 2, "stack": 2}, {}, "no table of the paper has this network"),
        ("spatial", {"num_maps": 2}, {"model": "lda_spatial"}, "no table of the paper has"),
        ("d256", {"embed_dim": 256}, {}, "model.embed_dim = 256 (the paper's 768): no table"),
        ("c40", {"num_maps": 2}, {"comps": ("c40",)}, "Table IX is of FF++ HQ (c23)"),
        ("r299ff", {"image_size": 299}, {}, "Table XI is of Celeb-DF, trained on it"),
    ):
        entry, _ = _sweep_entry(tmp_path, name, settings, **kw)
        assert entry["rows"] == [] and why in entry["notes"][0], (name, entry["notes"])
    # What the network does not depend on changes nothing: Xception has no maps.
    entry, _ = _sweep_entry(tmp_path, "xm2", {"num_maps": 2, "dtype": "bfloat16"}, model="xception")
    assert {r["table"] for r in entry["rows"]} >= {"I, VIII", "III"}
    # Table XI: Celeb-DF trained on it, at another input size; ACC only.
    entry, doc = _sweep_entry(
        tmp_path, "r299", {"image_size": 299}, dataset="celebdf", trained={"dataset": "celebdf"}
    )
    got = [(r["table"], r["subset"], r["metric"], r["paper"], r["ours"]) for r in entry["rows"]]
    assert got == [("XI", "Celeb-DF at 299x299", "ACC", 0.9540, doc["frame"]["acc"])]
    entry, _ = _sweep_entry(
        tmp_path,
        "x448",
        {"image_size": 448},
        dataset="celebdf",
        model="xception",
        trained={"dataset": "celebdf"},
    )
    assert [(r["table"], r["paper"]) for r in entry["rows"]] == [("XI", 0.9046)]
    # Celeb-DF scores of a run whose training data is not known: no row, the flag to pass.
    doc = _doc("celebdf", comps=("raw",), methods=("Celeb-synthesis",))
    doc["model_settings"] = {"name": "lda_st", "image_size": 299}
    (entry,) = report.report([_eval_dir(tmp_path / "u", "celebdf_test_120_data0123abcd", doc)])
    assert entry["rows"] == [] and "pass --trained-on celebdf for Table XI" in entry["notes"][0]
    (entry,) = report.report(
        [str(tmp_path / "u" / "run" / "eval" / "celebdf_test_120_data0123abcd")],
        trained_on="celebdf",
    )
    assert [r["table"] for r in entry["rows"]] == ["XI"]


def test_settings_come_from_metrics_json_else_the_runs_config_else_a_note(tmp_path):
    doc = _doc("ffpp", comps=("c23",))
    assert "model_settings" in doc and doc["model_settings"] is None  # built without them
    doc.pop("model_settings")  # an evaluate from before they were recorded
    path = _eval_dir(tmp_path / "a", "ffpp_test_120", doc, model={"name": "lda_st", "num_maps": 3})
    (entry,) = report.report([path])
    assert {r["table"] for r in entry["rows"]} == {"IX"}
    (entry,) = report.report([_eval_dir(tmp_path / "b", "ffpp_test_120", doc)])
    assert any(r["table"] == "I, VIII, IX, X" for r in entry["rows"])
    assert any("model settings are not recorded" in n for n in entry["notes"])
    # Recorded ones win over the config.json beside them.
    recorded = {**doc, "model_settings": {"name": "lda_st", "num_maps": 4}}
    path = _eval_dir(tmp_path / "c", "ffpp_test_120", recorded, model={"num_maps": 3})
    (entry,) = report.report([path])
    assert any(r["table"] == "I, VIII, IX, X" for r in entry["rows"])
    assert not any("not recorded" in n for n in entry["notes"])


def test_the_papers_network_is_the_models_defaults_and_configs_ffpp():
    import os

    from ldattn_jax.config_utils import load_config
    from ldattn_jax.models import lda

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "ffpp.py"))
    for key, value in paper_tables.PAPER_NETWORK.items():
        assert lda.DEFAULTS[key] == value == config.model[key], key
    for model, keys in paper_tables.NETWORK_KEYS.items():
        assert model in lda.VARIANTS and set(keys) <= set(paper_tables.PAPER_NETWORK)
