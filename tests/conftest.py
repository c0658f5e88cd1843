"""Test-wide setup.

Eight simulated CPU devices let the sharding tests compare 1-device and
8-device runs; they must be requested before jax is first imported.
"""

import os

# Appended, not set by default: an XLA_FLAGS of the user's own (a dump folder, a
# debug flag) would otherwise drop it, and every 8-device check would fail.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    _flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep TensorFlow-free: tensorflow_datasets must never try to import it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import logging  # noqa: E402  (after the environment above, as everything here)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_stream_handler_outlives_its_test():
    """A command's main (train's basicConfig(stream=sys.stdout, force=True)) leaves
    a root handler on the stream pytest captured for that test; the next test's
    log lines then go to a closed stream ("--- Logging error ---" on stderr) and
    break assertions on what that test printed. pytest's own capture handlers are
    its to manage: only plain stream handlers added during the test go."""
    before = list(logging.root.handlers)
    level = logging.root.level
    yield
    for handler in list(logging.root.handlers):
        if handler not in before and type(handler) is logging.StreamHandler:
            logging.root.removeHandler(handler)
    logging.root.setLevel(level)


@pytest.fixture
def exchange_works(tmp_path_factory) -> bool:
    """Whether two folders can be exchanged in one step here
    (`data_prep.atomic_files.swap_paths`: Linux's renameat2, on a file system
    that supports it); tests of that path skip or take the fallback where not."""
    from data_prep import atomic_files

    d = tmp_path_factory.mktemp("exchange_probe")
    (d / "a").mkdir()
    (d / "b").mkdir()
    return atomic_files.swap_paths(d / "a", d / "b")
