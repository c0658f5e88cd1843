"""configs/*.py and config_utils: loading, typed overrides, misspelt keys, config.json."""

import functools
import glob
import json
import os

import ml_collections
import pytest

from ldattn_jax.config_utils import (
    ConfigError,
    apply_overrides,
    flat_keys,
    load_config,
    write_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def test_ffpp_is_the_paper_setting():
    c = load_config(os.path.join(ROOT, "configs", "ffpp.py"))
    m = c.model
    assert (m.name, m.image_size, m.attention_size, m.patch_size) == ("lda_st", 398, 224, 16)
    assert (m.num_maps, m.stack) == (4, 3)
    assert (c.batch_size, c.lr, c.momentum, c.num_epochs, c.lr_halve_every_epochs) == (
        32,
        3e-4,
        0.9,
        20,
        5,
    )
    assert c.total_steps == -1 and c.data.val_split == "val" and c.data.train_split == "train"


@pytest.mark.parametrize("name", ["ffpp_c40", "celebdf", "dfdc"])
def test_dataset_configs_are_the_paper_setting_but_for_data(name):
    # Only the shards and, where fakes outnumber reals ~5:1 (Celeb-DF, DFDC),
    # the class balance may differ from FF++'s paper setting.
    def values(config_name):
        c = load_config(os.path.join(ROOT, "configs", config_name + ".py"))
        return {k: functools.reduce(getattr, k.split("."), c) for k in flat_keys(c)}

    ffpp, c = values("ffpp"), values(name)
    differ = {k for k in ffpp if ffpp[k] != c[k]}
    assert "data.dir" in differ and differ <= {"data.dir", "data.balance"}
    assert c["data.balance"] == ("none" if name == "ffpp_c40" else "loss_weight")


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_has_the_same_keys_and_a_run_command(path):
    ref = set(flat_keys(load_config(os.path.join(ROOT, "configs", "ffpp.py"))))
    c = load_config(path)
    assert set(flat_keys(c)) == ref
    with open(path) as f:
        text = f.read()
    assert "python -m ldattn_jax.train --config configs/" + os.path.basename(path) in text


def test_overrides_are_typed_by_the_existing_value():
    c = load_config(
        os.path.join(ROOT, "configs", "ffpp.py"),
        [
            "--config.batch_size=64",
            "--config.lr=1e-3",
            "--config.weight_decay=0",  # int text into a float field
            "--config.data.flip=false",
            "--config.data.dir=/x/y",
            "--config.model.name",  # space-separated value
            "lda_spatial",
            "--config.mesh=[('data', 2), ('fsdp', 4)]",
            "--config.total_steps=10",
        ],
    )
    assert c.batch_size == 64 and isinstance(c.batch_size, int)
    assert c.lr == 1e-3 and c.weight_decay == 0.0 and isinstance(c.weight_decay, float)
    assert c.data.flip is False and c.data.dir == "/x/y" and c.model.name == "lda_spatial"
    assert list(c.mesh) == [("data", 2), ("fsdp", 4)] and c.total_steps == 10


def test_misspelt_key_names_the_key_and_nearest_valid_keys():
    c = load_config(os.path.join(ROOT, "configs", "ffpp.py"))
    with pytest.raises(ConfigError, match=r"'batchsize'.*batch_size"):
        apply_overrides(c, ["--config.batchsize=64"])
    with pytest.raises(ConfigError, match=r"'data.balanse'.*data.balance"):
        apply_overrides(c, ["--config.data.balanse=sample"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("--config.batch_size=abc", "batch_size"),
        ("--config.batch_size=1.5", "float.*int"),
        ("--config.data.flip=maybe", "true/false"),
        ("batch_size=3", "--config.KEY=VALUE"),
        ("--config.lr", "no value"),
    ],
)
def test_bad_override_values_are_clear(override, match):
    c = load_config(os.path.join(ROOT, "configs", "ffpp.py"))
    with pytest.raises(ConfigError, match=match):
        apply_overrides(c, [override])


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.py"))


def test_write_config_round_trips(tmp_path):
    c = load_config(os.path.join(ROOT, "configs", "demo.py"), ["--config.seed=7"])
    write_config(c, tmp_path / "config.json")
    with open(tmp_path / "config.json") as f:
        back = json.load(f)
    assert back["seed"] == 7 and back["model"]["image_size"] == c.model.image_size
    assert ml_collections.ConfigDict(back).data.dir == c.data.dir


def test_resume_refuses_another_model_batch_or_stream_but_allows_other_changes(tmp_path):
    from ldattn_jax.config_utils import check_resume_config, write_config

    path = tmp_path / "config.json"
    c = load_config(os.path.join(ROOT, "configs", "demo.py"))
    assert check_resume_config(c, path) == []  # fresh workdir
    write_config(c, path)
    assert check_resume_config(c, path) == []
    longer = load_config(os.path.join(ROOT, "configs", "demo.py"), ["--config.total_steps=900"])
    assert check_resume_config(longer, path) == ["total_steps: -1 -> 900"]
    other = load_config(os.path.join(ROOT, "configs", "demo.py"), ["--config.model.num_maps=2"])
    with pytest.raises(ConfigError, match=r"model.num_maps: 4 -> 2.*new --workdir"):
        check_resume_config(other, path)
    # The saved iterator position and the lr schedule count batches of the old size.
    wider = load_config(os.path.join(ROOT, "configs", "demo.py"), ["--config.batch_size=64"])
    with pytest.raises(ConfigError, match=r"batch_size 16, this run has 64.*batch_size=16"):
        check_resume_config(wider, path)
    # The saved position is an element count into the stream these keys order.
    for override, match in [
        ("--config.seed=5", r"seed: 0 -> 5.*--config\.seed=0"),
        (
            "--config.data.balance=sample",
            r"balance: 'loss_weight' -> 'sample'.*balance='loss_weight'",
        ),
        ("--config.data.train_split=train_all", r"data\.train_split: 'train' -> 'train_all'"),
    ]:
        other = load_config(os.path.join(ROOT, "configs", "demo.py"), [override])
        with pytest.raises(ConfigError, match=match + r".*new --workdir"):
            check_resume_config(other, path)
    # The same shards copied elsewhere (a local SSD) are the same stream.
    moved = load_config(os.path.join(ROOT, "configs", "demo.py"), ["--config.data.dir=/ssd/shards"])
    assert check_resume_config(moved, path) == [f"data.dir: {c.data.dir!r} -> '/ssd/shards'"]
    # Loss weights or none: the same stream, another loss (the caller logs it).
    unweighted = load_config(
        os.path.join(ROOT, "configs", "demo.py"), ["--config.data.balance=none"]
    )
    assert check_resume_config(unweighted, path) == ["data.balance: 'loss_weight' -> 'none'"]


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("log_every", 0, r"config\.log_every=0 is out of range: use N >= 1"),
        ("checkpoint_every", 0, r"config\.checkpoint_every=0 .* --config\.checkpoint_every=1000"),
        ("eval_every", -2, r"config\.eval_every=-2 .*-1 \(once per epoch\) or 0 \(never\)"),
        ("total_steps", 0, r"config\.total_steps=0 .*-1 \(num_epochs \* steps_per_epoch\)"),
        ("eval_max_batches", 0, r"config\.eval_max_batches=0 .*-1 \(the whole split\)"),
        ("keep_checkpoints", 0, r"config\.keep_checkpoints=0"),
        ("lr_halve_every_epochs", -1, r"config\.lr_halve_every_epochs=-1 .*0 \(constant lr\)"),
        ("num_epochs", 0, r"config\.num_epochs=0"),
        ("batch_size", 0, r"config\.batch_size=0 is out of range: use N >= 1 \(global batch"),
        ("batch_size", -16, r"config\.batch_size=-16 is out of range"),
    ],
)
def test_step_counts_out_of_range_name_the_key_value_and_the_allowed_values(key, value, match):
    from ldattn_jax.config_utils import check_step_counts

    c = load_config(os.path.join(ROOT, "configs", "demo.py"), [f"--config.{key}={value}"])
    with pytest.raises(ConfigError, match=match):
        check_step_counts(c)


def test_step_counts_accept_their_documented_special_values():
    from ldattn_jax.config_utils import check_step_counts

    for overrides in (
        ["--config.eval_every=0"],
        ["--config.eval_every=-1"],
        ["--config.total_steps=-1", "--config.eval_max_batches=-1"],
        ["--config.total_steps=5", "--config.num_epochs=0"],  # num_epochs unused then
        ["--config.lr_halve_every_epochs=0", "--config.log_every=1"],
    ):
        check_step_counts(load_config(os.path.join(ROOT, "configs", "demo.py"), overrides))
    for path in CONFIGS:  # and every shipped config passes
        check_step_counts(load_config(path))


def test_a_paper_run_without_pretrained_vit_is_told_so():
    from ldattn_jax.train import init_notes

    ffpp = os.path.join(ROOT, "configs", "ffpp.py")
    (note,) = init_notes(load_config(ffpp))
    assert "config.model.vit_init is empty" in note and "pretrained ViT-B/16" in note
    assert init_notes(load_config(ffpp, ["--config.model.vit_init=/w/ViT-B_16.npz"])) == []
    assert init_notes(load_config(ffpp, ["--config.model.name=xception"])) == []
    # The CPU demo's 16-wide attention has no pretrained weights to miss.
    assert init_notes(load_config(os.path.join(ROOT, "configs", "demo.py"))) == []


def test_flags_read_0_and_1_and_step_counts_refuse_booleans():
    c = load_config(os.path.join(ROOT, "configs", "demo.py"), ["--config.data.flip=0"])
    assert c.data.flip is False
    assert apply_overrides(c, ["--config.data.flip=1"]).data.flip is True
    from ldattn_jax.config_utils import check_step_counts

    # True is an int to Python; for an int key it is a mistake, not "1": refused
    # on the command line, and as a step count also when a config file sets it.
    for key in ("log_every", "batch_size"):
        with pytest.raises(ConfigError, match=rf"{key}='True' has type bool.*holds a int"):
            load_config(os.path.join(ROOT, "configs", "demo.py"), [f"--config.{key}=True"])
    c = load_config(os.path.join(ROOT, "configs", "demo.py"))
    c.log_every = True
    with pytest.raises(ConfigError, match=r"config\.log_every=True: expected an integer"):
        check_step_counts(c)


def test_a_gs_workdir_without_gcsfs_and_gs_shards_are_refused_before_any_device_work(
    monkeypatch, capsys
):
    import importlib.util

    from ldattn_jax import config_utils, train

    real = importlib.util.find_spec
    present = set()
    monkeypatch.setattr(
        config_utils.importlib.util,
        "find_spec",
        lambda name, *a: (
            object()
            if name in present
            else (None if name in ("gcsfs", "tensorflow") else real(name, *a))
        ),  # fmt: skip
    )
    with pytest.raises(config_utils.ConfigError, match=r"gs://b/run .*pip install -e '\.\[gcs\]'"):
        config_utils.check_storage("gs://b/run", "/data/shards")
    config_utils.check_storage("/shared/run", "/data/shards")  # local paths: nothing to say
    present.add("gcsfs")
    config_utils.check_storage("gs://b/run", "/data/shards")
    with pytest.raises(config_utils.ConfigError, match=r"data.dir='gs://b/shards'.*gcsfuse"):
        config_utils.check_storage("gs://b/run", "gs://b/shards")
    # Through the command line: exit 2 and the reason, no traceback, nothing started.
    present.clear()
    demo = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py")
    with pytest.raises(SystemExit) as e:
        train.main(["--config", demo, "--workdir", "gs://b/run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "needs gcsfs here" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("lr", -1.0, r"config\.lr=-1\.0: must be > 0 \(0 trains nothing, < 0 climbs the loss\)"),
        ("lr", 0.0, r"config\.lr=0\.0: must be > 0"),
        ("lr", float("nan"), r"config\.lr=nan: must be > 0"),
        ("momentum", 1.0, r"config\.momentum=1\.0: must be in \[0, 1\) .*--config\.momentum=0\.9"),
        ("momentum", -0.1, r"config\.momentum=-0\.1: must be in \[0, 1\)"),
        ("weight_decay", -1e-4, r"config\.weight_decay=-0\.0001: must be >= 0 \(0 = off\)"),
        ("grad_clip_norm", -1.0, r"config\.grad_clip_norm=-1\.0: must be >= 0 \(0 = off\)"),
    ],
)
def test_optimizer_values_out_of_range_name_the_key_and_what_it_must_be(key, value, match):
    # lr <= 0 trained (none, or gradient ascent); schedules.py read a negative
    # weight_decay or grad_clip_norm as off.
    from ldattn_jax.config_utils import check_optimizer

    c = load_config(os.path.join(ROOT, "configs", "demo.py"))
    c[key] = value
    with pytest.raises(ConfigError, match=match):
        check_optimizer(c)


def test_optimizer_values_accept_off_and_every_shipped_config():
    from ldattn_jax.config_utils import check_optimizer

    off = ["--config.momentum=0", "--config.weight_decay=0", "--config.grad_clip_norm=0"]
    check_optimizer(load_config(os.path.join(ROOT, "configs", "demo.py"), off))
    for path in CONFIGS:
        check_optimizer(load_config(path))


def test_config_files_that_cannot_be_used_are_named_in_one_line(tmp_path):
    demo = os.path.join(ROOT, "configs", "demo.py")
    run_json = tmp_path / "config.json"
    write_config(load_config(demo), run_json)
    with pytest.raises(ConfigError, match=r"config\.json' is not a Python config file"):
        load_config(run_json)
    with pytest.raises(
        ConfigError, match=r"demo\.py'.*get_config\(\) takes no argument: drop ':foo'"
    ):
        load_config(demo + ":foo")
    needs = tmp_path / "needs.py"
    needs.write_text("def get_config(arg):\n    return None\n")
    with pytest.raises(ConfigError, match=r"needs\.py'.*needs one: --config .*needs\.py:ARG"):
        load_config(needs)
    broken = tmp_path / "broken.py"
    broken.write_text("import os\n\ndef get_config(:\n    pass\n")
    with pytest.raises(ConfigError, match=r"broken\.py, line 3: .*; fix the file"):
        load_config(broken)


def test_a_damaged_config_json_on_resume_is_named_not_a_traceback(tmp_path):
    from ldattn_jax.config_utils import check_resume_config

    c = load_config(os.path.join(ROOT, "configs", "demo.py"))
    path = tmp_path / "config.json"
    write_config(c, path)
    path.write_text(path.read_text()[:40])  # cut short, as by a full disk
    with pytest.raises(
        ConfigError, match=r"config\.json: unreadable \(.*\); .*delete it to resume"
    ):
        check_resume_config(c, path)
    path.write_text("[]")
    with pytest.raises(ConfigError, match=r"config\.json: no 'model' section"):
        check_resume_config(c, path)
