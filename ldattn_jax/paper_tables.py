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
