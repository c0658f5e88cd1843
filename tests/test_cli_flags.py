"""Long flags match with '-' or '_' alike in every command (data_prep.cli)."""

import re
from pathlib import Path

import pytest

from data_prep import build
from data_prep.cli import ArgumentParser
from ldattn_jax import evaluate, predict

REPO = Path(__file__).resolve().parents[1]


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="t")
    p.add_argument("--frames_per_video", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("rest", nargs="*")
    return p


def test_either_spelling_reaches_the_flag():
    a = _parser().parse_args(["--frames-per-video", "5", "--no_progress"])
    assert (a.frames_per_video, a.no_progress) == (5, True)
    a = _parser().parse_args(["--frames-per-video=7"])  # the --flag=value form too
    assert a.frames_per_video == 7


def test_only_unknown_long_flags_are_respelled():
    p = _parser()
    p.add_argument("--a-b", dest="dash")
    p.add_argument("--a_b", dest="under")  # both spellings defined: each keeps its own
    a, rest = p.parse_known_args(
        ["--a_b", "x", "--a-b", "y", "--config.model.image_size=8", "--zz_top", "--", "--a_b"]
    )
    assert (a.under, a.dash, a.rest) == ("x", "y", ["--a_b"])
    # ml_collections overrides and flags no parser knows pass on as written.
    assert rest == ["--config.model.image_size=8", "--zz_top"]
    assert p.respelled(["--frames-per-video", "--", "--frames-per-video"]) == [
        "--frames_per_video", "--", "--frames-per-video",
    ]  # fmt: skip


def test_the_commands_take_either_spelling(tmp_path, capsys):
    base = ["--dataset", "synthetic", "--root", "r", "--out", "o"]
    assert build.parse_args([*base, "--frames_per_video", "5", "--no_progress"]).no_progress
    # evaluate and predict define --batch_size / --frames_per_video: the dashed
    # spelling reaches the same argument (refused here for its value, by name).
    with pytest.raises(SystemExit):
        evaluate.main(["--workdir", str(tmp_path), "--batch-size", "0"])
    err = capsys.readouterr().err
    assert "argument --batch_size" in err and "unrecognized" not in err
    with pytest.raises(SystemExit):
        predict.main(["v.mp4", "--workdir", str(tmp_path), "--frames-per-video", "0"])
    assert "argument --frames_per_video" in capsys.readouterr().err


def test_every_command_line_uses_the_shared_parser():
    # A new command written with plain argparse would take one spelling only.
    plain = [
        str(f.relative_to(REPO))
        for d in ("ldattn_jax", "data_prep", "benchmarks")
        for f in (REPO / d).rglob("*.py")
        if f.name != "cli.py" and re.search(r"argparse\.ArgumentParser\(", f.read_text())
    ]
    assert plain == []


def test_overrides_pass_and_typos_are_named(capsys):
    p = ArgumentParser(prog="t")  # no positionals: a stray word is left over
    p.add_argument("--threshold")
    p.add_argument("--no-progress", action="store_true")
    args, overrides = p.parse_with_overrides(
        ["--threshold", "0.4", "--config.a=1", "--config.b", "2", "--no_progress"]
    )
    assert (args.threshold, args.no_progress) == ("0.4", True)
    assert overrides == ["--config.a=1", "--config.b", "2"]
    for argv, why in [
        (["--thresold=0.4"], "unrecognized argument --thresold; did you mean --threshold?"),
        (["--config.a=1", "stray"], "unrecognized argument stray"),
    ]:
        with pytest.raises(SystemExit):
            p.parse_with_overrides(argv)
        assert why in capsys.readouterr().err
