"""train's command line on mistakes it can foresee: exit status 1 and one line naming
the key, value or path and what to do, with no traceback and nothing written."""

import logging
import os
import re

import pytest
from test_train_helpers import DEMO_CONFIG

from ldattn_jax import train


@pytest.fixture
def train_cli(tmp_path, capsys):
    """(exit status, what it printed) of `python -m ldattn_jax.train` in tmp_path/run."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # main points them at this test's stdout

    def run(*args, workdir=str(tmp_path / "run")):
        code = train.main(["--config", DEMO_CONFIG, "--workdir", workdir, *args])
        out = capsys.readouterr()
        return code, out.out + out.err

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    "override, match",
    [
        ("--config.batch_size=0", r"config\.batch_size=0 is out of range: use N >= 1"),
        ("--config.batch_size=-16", r"config\.batch_size=-16 is out of range"),
        ("--config.lr=-1", r"config\.lr=-1\.0: must be > 0"),
        ("--config.momentum=1.5", r"config\.momentum=1\.5: must be in \[0, 1\)"),
        ("--config.model.name=lda_sst", r"config\.model\.name='lda_sst' is not a model; choose"),
        ("--config.model.dtype=fp16", r"config\.model\.dtype='fp16'; choose one of"),
        ("--config.model.stack=0", r"config\.model\.stack=0: lda_st needs n >= 1"),
        (
            "--config.model.attention_size=58",
            r"config\.model: attention_size 58 is not a multiple of patch_size 4",
        ),
        ("--config.model.num_templates=0", r"config\.model\.num_templates=0: must be an integer"),
        ("--config.model.patch_size=0", r"config\.model\.patch_size=0: must be an integer >= 1"),
        ("--config.model.embed_dim=0", r"config\.model\.embed_dim=0: must be an integer >= 1"),
        ("--config.model.middle_blocks=-1", r"config\.model\.middle_blocks=-1: .* >= 0"),
        ("--config.model.num_classes=1", r"config\.model\.num_classes=1: must be 2"),
        # Checkpoints chosen on test inflate its results; on train, the most overfit.
        ("--config.data.val_split=test", r"val_split='test': .*inflates the test results"),
        ("--config.data.val_split=train", r"val_split='train' is also config\.data\.train_split"),
    ],
)
def test_config_mistakes_stop_in_one_line_before_anything_is_written(
    train_cli, tmp_path, override, match
):
    # No shards: a check that regressed fails fast here instead of training.
    code, out = train_cli(override, f"--config.data.dir={tmp_path / 'none'}")
    assert code == 1 and re.search(match, out) and "Traceback" not in out, out[-2000:]
    assert not os.path.exists(tmp_path / "run")


def test_a_workdir_that_is_a_file_and_a_data_dir_of_two_builds_are_named(train_cli, tmp_path):
    (tmp_path / "file").write_text("")
    code, out = train_cli(workdir=str(tmp_path / "file"))
    assert code == 1 and "Traceback" not in out
    assert re.search(r"--workdir .*/file is a file; pass a folder", out), out[-2000:]
    two = tmp_path / "shards"
    for build in ("ffpp_n3_s398", "celebdf_n3_s398"):
        (two / "lda_faces" / build / "1.0.0").mkdir(parents=True)
        (two / "lda_faces" / build / "1.0.0" / "dataset_info.json").write_text("{}")
    code, out = train_cli(f"--config.data.dir={two}")
    assert code == 1 and "Traceback" not in out
    assert re.search(r"config\.data\.dir: .* holds several builds .*pass one of", out), out[-2000:]
