"""FaceForensics++ (c23 / HQ) training config, paper V-A.

    python -m ldattn_jax.summary --config configs/ffpp.py
    python -m ldattn_jax.summary --config configs/ffpp.py --config.model.name=lda_spatial

The model section follows docs/interfaces.md; the training section is a
placeholder the training code extends.
"""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.name = "lda_st"  # 'xception' | 'lda_spatial' | 'lda_temporal' | 'lda_st'
    m.image_size = 398  # backbone input; conv2 -> 196 = 14*14, block1 -> 98 = 7*14
    m.attention_size = 224  # ViT-B/16 input: a resize of the same crop
    m.patch_size = 16  # -> 14x14 attention grid
    m.embed_dim = 768  # D (ViT-B)
    m.num_templates = 12  # forgery templates = ViT-B heads
    m.num_maps = 4  # m, Table IX
    m.stack = 3  # n next frames for the temporal module, Table X
    m.num_classes = 2
    m.middle_blocks = 8
    m.spatial_stage = "conv2"
    m.temporal_stage = "block1"
    m.dtype = "float32"  # or 'bfloat16' (compute only; params and BN stats stay fp32)
    m.vit_init = ""  # ViT-B/16 .npz (Google layout); '' = random init
    m.backbone_init = ""  # Keras Xception .keras/.weights.h5; '' = random (the paper's choice)
    m.residual_scale = 1.0  # multiplies the motion residuals before patch embedding
    return m


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = get_model_config()
    config.seed = 0
    # Paper V-A: SGD momentum 0.9, lr 3e-4 halved every 5 epochs, 20 epochs, batch 32.
    config.batch_size = 32
    config.learning_rate = 3e-4
    config.momentum = 0.9
    config.num_epochs = 20
    config.lr_halving_epochs = 5
    return config
