"""The four detectors of the paper, chosen by ``config.model.name``.

    xception      the backbone alone (Table VII/VIII baseline)
    lda_spatial   maps from frame t re-weight the conv2 features (IV-C)
    lda_temporal  maps from frame t + residuals r^t..r^{t+n-1} re-weight block1 (IV-D)
    lda_st        both

Input: frames [B, n+1, S, S, 3] uint8 (or float 0..255), S = image_size.
Everything else happens on device inside the forward: the Keras/ViT
normalisation x/127.5 - 1, the attention view (one bilinear antialiased
resize of the same crop to attention_size), and the motion residuals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ldattn_jax.models.long_distance_attention import LongDistanceAttention, apply_maps
from ldattn_jax.models.view import normalize, resize_square
from ldattn_jax.models.xception import Xception, stage_names, stage_shapes

# Bump when the same weights give other outputs (scores or maps), so that results
# kept from the old code (predict's journal) are not served as this code's.
# 2: the attention's N scales the activations before the 1x1 combination.
MODEL_VERSION = 2

VARIANTS = ("xception", "lda_spatial", "lda_temporal", "lda_st")
_SPATIAL = ("lda_spatial", "lda_st")
_TEMPORAL = ("lda_temporal", "lda_st")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# config.model.dtype: the compute dtype; params and BatchNorm statistics stay float32.
COMPUTE_DTYPES = tuple(_DTYPES)

DEFAULTS: dict[str, Any] = dict(
    name="lda_st",
    image_size=398,
    attention_size=224,
    patch_size=16,
    embed_dim=768,
    num_templates=12,
    num_maps=4,
    stack=3,
    num_classes=2,
    middle_blocks=8,
    spatial_stage="conv2",
    temporal_stage="block1",
    dtype="float32",
    vit_init="",
    backbone_init="",
    residual_scale=1.0,
    template_init_std=0.02,
    bn_momentum=0.99,
)


def _get(cfg, key):
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, None)
    else:
        value = getattr(cfg, key, None)
    return DEFAULTS[key] if value is None else value


def _check_name(name: str) -> str:
    if name not in VARIANTS:
        raise ValueError(f"config.model.name={name!r} is not a model; choose one of {VARIANTS}")
    return name


def _check_stack(name: str, stack) -> int:
    # stack 0 built a "temporal" module over the key frame alone (a second spatial
    # module under the temporal name); a negative one failed on a bare modulo.
    if name in _TEMPORAL and (isinstance(stack, bool) or not isinstance(stack, int) or stack < 1):
        raise ValueError(
            f"config.model.stack={stack!r}: {name} needs n >= 1 following frames (the "
            "temporal module reads the frame and the motion residuals of the next n; "
            "the paper's n is 3, Table X tries 2-5)"
        )
    return stack


def required_frames(model_config) -> int:
    """Frames per sample the model reads: 1 (xception, lda_spatial) or n+1."""
    name = _check_name(_get(model_config, "name"))
    return _check_stack(name, _get(model_config, "stack")) + 1 if name in _TEMPORAL else 1


class LDAModel(nnx.Module):
    """Xception @ image_size with optional spatial / temporal long-distance attention."""

    def __init__(
        self,
        *,
        name: str = "lda_st",
        image_size: int = 398,
        attention_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        num_templates: int = 12,
        num_maps: int = 4,
        stack: int = 3,
        num_classes: int = 2,
        middle_blocks: int = 8,
        spatial_stage: str = "conv2",
        temporal_stage: str = "block1",
        dtype: str = "float32",
        residual_scale: float = 1.0,
        template_init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.name = _check_name(name)
        _check_stack(name, stack)
        if dtype not in _DTYPES:
            raise ValueError(f"config.model.dtype={dtype!r}; choose one of {tuple(_DTYPES)}")
        self.dtype = dtype
        self.image_size = image_size
        self.attention_size = attention_size
        self.stack = stack
        self.residual_scale = float(residual_scale)
        compute = _DTYPES[dtype]
        self.backbone = Xception(
            num_classes=num_classes, middle_blocks=middle_blocks, dtype=compute, rngs=rngs
        )
        shapes = stage_shapes(image_size, middle_blocks)
        if min(shapes["conv2"][:2]) < 1:
            raise ValueError(f"config.model.image_size={image_size} is too small for Xception")
        attn = dict(
            image_size=attention_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            num_templates=num_templates,
            num_maps=num_maps,
            template_init_std=template_init_std,
            dtype=compute,
            rngs=rngs,
        )
        stages = {}
        for kind, stage, variants in (
            ("spatial", spatial_stage, _SPATIAL),
            ("temporal", temporal_stage, _TEMPORAL),
        ):
            if name not in variants:
                continue
            if stage not in shapes:
                raise ValueError(
                    f"config.model.{kind}_stage={stage!r} is not an Xception stage; "
                    f"choose one of {stage_names(middle_blocks)}"
                )
            if not 1 <= num_maps <= shapes[stage][2]:
                raise ValueError(
                    f"config.model.num_maps={num_maps} must lie in [1, {shapes[stage][2]}] "
                    f"(the channels of {kind}_stage {stage!r})"
                )
            stages[kind] = stage
        # Pairs, not a dict: static attributes are part of the GraphDef, which
        # evaluate.Predictor hashes (a cache key) to share one compile between
        # the models of one architecture.
        self.stage_pairs = tuple(stages.items())
        self.spatial = LongDistanceAttention(slots=1, **attn) if "spatial" in stages else None
        self.temporal = (
            LongDistanceAttention(slots=stack + 1, **attn) if "temporal" in stages else None
        )

    @property
    def stages(self) -> dict[str, str]:
        """{'spatial' | 'temporal': the Xception stage its maps re-weight}."""
        return dict(self.stage_pairs)

    @property
    def required_frames(self) -> int:
        return self.stack + 1 if self.temporal is not None else 1

    def _check_input(self, frames):
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, n+1, H, W, 3], got shape {frames.shape}")
        _, t, h, w, _ = frames.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"frames are {h}x{w}, the model expects {self.image_size}x{self.image_size} "
                "(config.model.image_size); crop/resize in the data pipeline"
            )
        if t < self.required_frames:
            raise ValueError(
                f"model '{self.name}' needs {self.required_frames} frames per sample "
                f"(frame t and the next {self.stack}), got {t}"
            )

    def attention_maps(self, frames: jax.Array) -> dict[str, jax.Array]:
        """Maps [B, m, g, g] float32 for each attention module, from raw frames."""
        maps = {}
        if self.spatial is None and self.temporal is None:
            return maps
        t = self.required_frames
        x = normalize(frames[:, :t])
        # One resize for every frame the attention modules need, on device.
        view = resize_square(x, self.attention_size)
        if self.spatial is not None:
            maps["spatial"] = self.spatial(view[:, :1])
        if self.temporal is not None:
            # r^t = I^{t+1} - I^t on the normalised view (resize is linear, so this
            # equals resizing the raw residual); residual_scale lets small motion
            # residuals reach the patch embedding with a frame-like magnitude.
            residuals = (view[:, 1:] - view[:, :-1]) * self.residual_scale
            maps["temporal"] = self.temporal(jnp.concatenate([view[:, :1], residuals], axis=1))
        return maps

    def __call__(self, frames: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        self._check_input(frames)
        maps = self.attention_maps(frames)
        per_stage: dict[str, list[jax.Array]] = {}
        for kind, m in maps.items():
            per_stage.setdefault(self.stages[kind], []).append(m)

        def modulator(ms):
            def reweight(features):
                for m in ms:
                    features = apply_maps(features, m)
                return features

            return reweight

        modulators = {stage: modulator(ms) for stage, ms in per_stage.items()}
        logits = self.backbone(normalize(frames[:, 0]), modulators)
        return logits, maps


def set_bn_momentum(model: nnx.Module, momentum: float) -> None:
    """Momentum of every BatchNorm's running averages.

    Keras's 0.99 (the default, needed for Keras parity) makes the running
    statistics remember their random-init values for several hundred steps,
    so eval-mode predictions of short runs (the CPU demo) are degenerate;
    short runs set e.g. 0.9.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"config.model.bn_momentum={momentum}: must lie in [0, 1)")
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm):
            module.momentum = momentum


def build_model(model_config, *, rngs: nnx.Rngs) -> LDAModel:
    """Builds the variant ``model_config.name``; loads ``vit_init`` / ``backbone_init`` if set."""
    not_ctor = ("vit_init", "backbone_init", "bn_momentum")
    kwargs = {k: _get(model_config, k) for k in DEFAULTS if k not in not_ctor}
    model = LDAModel(**kwargs, rngs=rngs)
    set_bn_momentum(model, float(_get(model_config, "bn_momentum")))
    backbone_init = _get(model_config, "backbone_init")
    if backbone_init:
        from ldattn_jax.models.keras_convert import load_keras_xception

        load_keras_xception(model.backbone, backbone_init)
    vit_init = _get(model_config, "vit_init")
    if vit_init:
        from ldattn_jax.models.vit_init import load_vit_npz

        for module in (model.spatial, model.temporal):
            if module is not None:
                load_vit_npz(module, vit_init)
    return model
