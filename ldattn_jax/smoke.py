"""Smoke run of the model core alone, without data (`make demo` runs the whole job).

    python -m ldattn_jax.smoke [--config configs/ffpp.py] [--steps 8]

1. builds lda_st at the config's full size abstractly (nnx.eval_shape) and
   prints its output shapes;
2. prints the Table VII comparison (ldattn_jax.summary);
3. runs a few jitted SGD steps of a tiny lda_st on one fixed random batch and
   prints the losses (they must go down).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from data_prep import cli
from ldattn_jax import summary
from ldattn_jax.models.lda import DEFAULTS, build_model, required_frames


def tiny_model_config(name: str = "lda_st", **overrides) -> ml_collections.ConfigDict:
    """A geometry with the paper's ratios at toy cost: 62 -> conv2 28 = 14x2, block1 14."""
    m = ml_collections.ConfigDict(DEFAULTS)
    m.update(
        name=name,
        image_size=62,
        attention_size=56,
        patch_size=4,
        embed_dim=32,
        num_templates=4,
        num_maps=4,
        stack=2,
        middle_blocks=0,
    )
    m.update(overrides)
    return m


def random_batch(model_config, batch: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = model_config.image_size
    frames = rng.integers(0, 256, (batch, required_frames(model_config), s, s, 3), np.uint8)
    labels = np.arange(batch) % model_config.num_classes
    return jnp.asarray(frames), jnp.asarray(labels)


def train_losses(model_config, steps: int = 8, lr: float = 0.05, seed: int = 0) -> list[float]:
    """Losses of ``steps`` SGD-momentum steps on one fixed batch (train-mode BN).

    Runs ``ldattn_jax.train.make_train_step``, the step training jits, so the
    smoke (and the test that the loss goes down) covers the real update.
    """
    from ldattn_jax.train import make_train_step

    model = build_model(model_config, rngs=nnx.Rngs(seed))
    model.train()
    tx = optax.sgd(lr, momentum=0.9)
    graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
    step = jax.jit(make_train_step(graphdef, optax.constant_schedule(lr)), donate_argnums=(0,))
    frames, labels = random_batch(model_config, seed=seed)
    batch = {"frames": frames, "label": labels.astype(jnp.int32)}
    class_w = jnp.ones(2, jnp.float32)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, class_w)
        losses.append(float(metrics["loss"]))
    return losses


def main(argv=None) -> int:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ffpp.py")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    config = summary.load_config(args.config)

    full = config.model.copy_and_resolve_references()
    full.name, full.vit_init, full.backbone_init = "lda_st", "", ""
    s = full.image_size
    frames = jax.ShapeDtypeStruct((2, required_frames(full), s, s, 3), jnp.uint8)
    out = jax.eval_shape(lambda f: build_model(full, rngs=nnx.Rngs(0))(f), frames)
    logits, maps = out
    print(
        f"lda_st @ {s}: frames {frames.shape} -> logits {logits.shape} {logits.dtype}, maps",
        {k: v.shape for k, v in maps.items()},
    )
    print(summary.format_table(summary.summarize(config)))
    losses = train_losses(tiny_model_config(), steps=args.steps)
    print("tiny lda_st train losses:", " ".join(f"{x:.4f}" for x in losses))
    if not losses[-1] < losses[0]:
        print("FAIL: loss did not go down", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
