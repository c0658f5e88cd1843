"""The numbers the LDA paper reports (Lu et al., TNNLS 2023), as data.

Fractions, not percent; transcribed from ../shared/papers/
lda_long_distance_attention_tnnls2023.txt. Only the rows of models this
project trains: "Ours" is ``lda_st`` (the spatial-temporal model), "Xception
[51]" is ``xception``; Table VIII adds the single-module variants. A
``report`` row puts each beside the same figure of an evaluation
(`ldattn_jax.report`).

What the paper leaves open, and how a comparison reads it:
- Tables I-III and VIII are frame level (the paper calls its method
  frame-level); Table IV is video level, on LQ (c40) by its text.
- Table III does not say which compression it used.
- Table VI trains on "HQ and LQ of FaceForensics++" and tests on Celeb-DF;
  its FF++ column (99.97 for Ours) matches no row of Table I.
- The paper's Xception rows come from the literature (the backbone as others
  trained it), not from the same training as Ours.
- ACC depends on the decision threshold, which the paper does not state.
- Tables IX and X (m maps, n frames) name neither data nor compression;
  their m = 4 and n = 3 rows are Table I's HQ figures for Ours, so they are
  read as FF++ c23, frame level, lda_st.
- Table XI (Celeb-DF at four input resolutions) does not name its metric;
  Ours at 398 is Table II's ACC (99.13), so it is read as ACC. Its Xception
  is the authors' own reproduction at each size (90.87 at 398, not Table
  II's 89.55).
- Table X's n: IV-D's "the next n frames" is ``config.model.stack`` (as
  this project reads it, models/README.md); the table's own title ("n
  consecutive frames") would make it stack + 1.
"""

from __future__ import annotations

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")

# Table I: FF++ frame level, all four methods; HQ = c23, LQ = c40.
TABLE_I = {
    "c23": {
        "lda_st": {"acc": 0.9951, "auc": 0.9988},
        "xception": {"acc": 0.9573, "auc": 0.9630},
    },
    "c40": {
        "lda_st": {"acc": 0.9581, "auc": 0.9849},
        "xception": {"acc": 0.8686, "auc": 0.8930},
    },
}

# Table II: Celeb-DF, trained and tested on it.
TABLE_II = {
    "lda_st": {"acc": 0.9913, "auc": 0.9987},
    "xception": {"acc": 0.8955, "auc": 0.8991},
}

# Table III: FF++ frame level per manipulation method (compression not stated).
TABLE_III = {
    "lda_st": {
        "Deepfakes": {"acc": 0.9947, "auc": 0.9979},
        "Face2Face": {"acc": 0.9998, "auc": 1.0000},
        "FaceSwap": {"acc": 0.9827, "auc": 0.9946},
        "NeuralTextures": {"acc": 0.9325, "auc": 0.9861},
    },
    "xception": {
        "Deepfakes": {"acc": 0.9515, "auc": 0.9908},
        "Face2Face": {"acc": 0.8348, "auc": 0.9377},
        "FaceSwap": {"acc": 0.9209, "auc": 0.9742},
        "NeuralTextures": {"acc": 0.7789, "auc": 0.8423},
    },
}

# Table IV: FF++ LQ (c40) video level per manipulation method.
TABLE_IV = {
    "lda_st": {
        "Deepfakes": {"acc": 0.9929, "auc": 0.9964},
        "Face2Face": {"acc": 0.9964, "auc": 0.9975},
        "FaceSwap": {"acc": 0.9858, "auc": 0.9981},
        "NeuralTextures": {"acc": 0.9429, "auc": 0.9631},
    },
    "xception": {
        "Deepfakes": {"acc": 0.9679, "auc": 0.9764},
        "Face2Face": {"acc": 0.9179, "auc": 0.9317},
        "FaceSwap": {"acc": 0.9607, "auc": 0.9705},
        "NeuralTextures": {"acc": 0.8179, "auc": 0.8236},
    },
}

# Table VI: trained on FF++, tested on Celeb-DF (AUC only).
TABLE_VI = {"lda_st": {"auc": 0.7033}, "xception": {"auc": 0.4820}}

# Table VIII: the ablation, FF++ HQ (c23), frame level.
TABLE_VIII = {
    "xception": {"acc": 0.9573, "auc": 0.9630},
    "lda_spatial": {"acc": 0.9911, "auc": 0.9976},
    "lda_temporal": {"acc": 0.9880, "auc": 0.9985},
    "lda_st": {"acc": 0.9951, "auc": 0.9988},
}

# The paper's network: the settings every table but IX-XI is of (configs/ffpp.py;
# a test keeps them equal). Init, compute dtype and BatchNorm momentum are left
# out: they change how a network was trained or rounded, not which it is.
PAPER_NETWORK = {
    "image_size": 398,
    "attention_size": 224,
    "patch_size": 16,
    "embed_dim": 768,
    "num_templates": 12,
    "num_maps": 4,
    "stack": 3,
    "num_classes": 2,
    "middle_blocks": 8,
    "spatial_stage": "conv2",
    "temporal_stage": "block1",
    "residual_scale": 1.0,
}
_BACKBONE = ("image_size", "middle_blocks", "num_classes")
_ATTENTION = ("attention_size", "patch_size", "embed_dim", "num_templates", "num_maps")
_TEMPORAL = ("stack", "temporal_stage", "residual_scale")
# Which settings each variant's network depends on.
NETWORK_KEYS = {
    "xception": _BACKBONE,
    "lda_spatial": (*_BACKBONE, *_ATTENTION, "spatial_stage"),
    "lda_temporal": (*_BACKBONE, *_ATTENTION, *_TEMPORAL),
    "lda_st": tuple(PAPER_NETWORK),
}

# Table IX: lda_st with m attention maps (FF++ c23 frame level, by its m = 4 row).
TABLE_IX = {
    1: {"acc": 0.9779, "auc": 0.9973},
    2: {"acc": 0.9935, "auc": 0.9962},
    3: {"acc": 0.9947, "auc": 0.9994},
    4: {"acc": 0.9951, "auc": 0.9988},
    5: {"acc": 0.9938, "auc": 0.9991},
}

# Table X: lda_st with n frames after the key frame (config.model.stack; FF++ c23).
TABLE_X = {
    2: {"acc": 0.9933, "auc": 0.9985},
    3: {"acc": 0.9951, "auc": 0.9988},
    4: {"acc": 0.9948, "auc": 0.9993},
    5: {"acc": 0.9912, "auc": 0.9976},
}

# Table XI: Celeb-DF (trained on it) at input resolution R (config.model.image_size),
# read as ACC; at R != 398 the maps meet the features through adaptive average pooling.
TABLE_XI = {
    "lda_st": {256: 0.9487, 299: 0.9540, 398: 0.9913, 448: 0.9691},
    "xception": {256: 0.9061, 299: 0.9082, 398: 0.9087, 448: 0.9046},
}


def network_differences(model: str, settings: dict) -> dict[str, tuple]:
    """{key: (ours, the paper's)} of the settings ``model``'s network depends on
    that differ from the paper's (a missing key counts as the paper's)."""
    out = {}
    for key in NETWORK_KEYS.get(model, ()):
        ours = settings.get(key, PAPER_NETWORK[key])
        if ours != PAPER_NETWORK[key]:
            out[key] = (ours, PAPER_NETWORK[key])
    return out
