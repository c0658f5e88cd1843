"""Shared by the training tests: tiny shards, a tiny config, a persistent jit cache.

The tiny LDA-ST (62 px backbone, 56 px / patch 4 attention = 14x14 grid, one
middle block, D = 32, 4 templates) keeps every compile of the real model
small; the persistent compilation cache lets the reference run, the resumed
run and the NaN run share one compiled step.
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np
from flax import nnx

from ldattn_jax.config_utils import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.py")
IMAGE_SIZE = 62
TINY = [
    f"--config.model.image_size={IMAGE_SIZE}",
    "--config.model.attention_size=56",
    "--config.model.patch_size=4",
    "--config.model.embed_dim=32",
    "--config.model.num_templates=4",
    "--config.model.num_maps=4",
    "--config.model.middle_blocks=1",
    "--config.batch_size=8",
    "--config.lr=0.01",
    "--config.lr_halve_every_epochs=1",
    "--config.data.read_threads=2",
    # Pinned here so tuning configs/demo.py never changes what these tests check.
    "--config.optimizer=sgd",  # Adam's per-parameter normalisation amplifies fp32 noise
    "--config.model.bn_momentum=0.99",
    "--config.data.balance=loss_weight",
    "--config.data.flip=true",
    "--config.data.worker_count=0",
    "--config.model.name=lda_st",
    "--config.model.dtype=float32",
    "--config.async_checkpointing=true",
]
JIT_CACHE = os.path.join(tempfile.gettempdir(), f"ldattn_jax_test_jit_cache_{os.getuid()}")


def use_jit_cache() -> None:
    """Persistent compilation cache for this process (re-initialised if jax already compiled)."""
    from jax._src import compilation_cache

    jax.config.update("jax_compilation_cache_dir", JIT_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()


def jit_cache_env() -> dict:
    return {
        "JAX_COMPILATION_CACHE_DIR": JIT_CACHE,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def build_tiny_shards(out_dir: str, root_dir: str) -> str:
    """6 real + 24 fake synthetic videos → 4 stacks of 4 frames each, 62 px, all splits."""
    from data_prep import build, synthesize

    synthesize.synthesize(root_dir, videos=6, seed=3, frames=12)
    rc = build.main(
        [
            "--dataset",
            "synthetic",
            "--root",
            root_dir,
            "--out",
            out_dir,
            "--workers",
            "1",
            "--frames-per-video",
            "4",
            "--stack",
            "3",
            "--size",
            str(IMAGE_SIZE),
            "--no-progress",
        ]
    )
    assert rc == 0
    return out_dir


def tiny_config(data_dir: str, *extra: str):
    return load_config(DEMO_CONFIG, [*TINY, f"--config.data.dir={data_dir}", *extra])


def tiny_args(data_dir: str, *extra: str) -> list[str]:
    return [*TINY, f"--config.data.dir={data_dir}", *extra]


def flat_params(model_state) -> dict[str, np.ndarray]:
    """{'backbone/conv1/conv/kernel': array, ...} of a model's nnx state (or pure dict)."""
    pure = model_state if isinstance(model_state, dict) else nnx.to_pure_dict(model_state)
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(pure):
        key = "/".join(str(getattr(p, "key", p)) for p in path)
        out[key] = np.asarray(jax.device_get(leaf))
    return out
