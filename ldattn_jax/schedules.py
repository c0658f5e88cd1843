"""Learning-rate schedule and optimizer of paper V-A.

SGD with momentum 0.9, lr 3e-4 halved every 5 epochs. The schedule is a
function of the optimizer's own step count, so it really decays (DeepfakeBench
steps its scheduler after the loop and never decays) and it resumes exactly
from a checkpoint.
"""

from __future__ import annotations

import jax
import optax

from ldattn_jax.config_utils import ConfigError

__all__ = ["OPTIMIZERS", "make_optimizer", "make_schedule"]

# 'sgd' is the paper's (V-A). 'adam' exists for short runs from random init:
# the CPU demo's 414 SGD steps stay at chance while Adam reaches video AUC 1.0
# on the same data (measured, docs/evaluation.md).
OPTIMIZERS = ("sgd", "adam")


def make_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """lr(step) = lr * 0.5 ** floor(step / (lr_halve_every_epochs * steps_per_epoch))."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    every = int(config.lr_halve_every_epochs) * steps_per_epoch
    if every <= 0:  # lr_halve_every_epochs = 0 → constant lr
        return optax.constant_schedule(config.lr)
    return optax.exponential_decay(
        init_value=config.lr, transition_steps=every, decay_rate=0.5, staircase=True
    )


def _is_kernel(path, _) -> bool:
    # nnx params come as .../<name>/value: the last dict key names the variable
    # ('kernel', or the attention's 'key_kernel').
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(names) and str(names[-1]).endswith("kernel")


def _after(preprocess: list, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` on gradients first passed through the stateless `preprocess`
    links, with inner's state alone.

    optax.chain keeps a state slot per link, so turning clipping or weight decay
    on moved the momentum to another place in the state: a resume with
    --config.grad_clip_norm (what a diverged run is told to do) could not read
    its own checkpoints. Here the state's layout is (inner's state,) whatever
    is switched on -- the layout chain(sgd) always had with both off.
    """

    def init(params):
        for t in preprocess:
            if jax.tree.leaves(t.init(params)):
                raise ValueError(f"{t} keeps state; it cannot run before the optimizer here")
        return (inner.init(params),)

    def update(updates, state, params=None):
        for t in preprocess:
            updates, _ = t.update(updates, t.init(params), params)
        updates, inner_state = inner.update(updates, state[0], params)
        return updates, (inner_state,)

    return optax.GradientTransformation(init, update)


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Optional global-norm clipping → optional weight decay → SGD with momentum (or Adam).

    Weight decay adds wd * w to the gradient of kernels (then scaled by the lr).
    The optimizer state has the same layout with or without the first two, so a
    run can switch them on or off when it resumes; not so sgd <-> adam
    (config_utils.check_resume_config refuses that).
    """
    schedule = make_schedule(config, steps_per_epoch)
    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.weight_decay > 0:
        # Decay kernels only (as big_vision's default): not BatchNorm/LayerNorm
        # scales and biases, and not the attention's position tables and
        # templates, which are 2-D and 3-D but are embeddings, not weights.
        parts.append(
            optax.add_decayed_weights(
                config.weight_decay,
                mask=lambda p: jax.tree_util.tree_map_with_path(_is_kernel, p),
            )
        )
    name = config.get("optimizer", "sgd")
    if name == "sgd":
        inner = optax.sgd(
            learning_rate=schedule, momentum=config.momentum, nesterov=config.nesterov
        )
    elif name == "adam":
        inner = optax.adam(learning_rate=schedule)
    else:
        raise ConfigError(f"config.optimizer={name!r}: choose one of {OPTIMIZERS}")
    return _after(parts, inner)
