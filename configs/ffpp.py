"""FaceForensics++ (c23 / HQ) training config, paper V-A.

    python -m ldattn_jax.train --config configs/ffpp.py --workdir runs/ffpp_c23 \
        --config.data.dir=data/shards/ffpp_c23
    python -m ldattn_jax.summary --config configs/ffpp.py
    python -m ldattn_jax.summary --config configs/ffpp.py --config.model.name=lda_spatial

The model section follows docs/interfaces.md (models/README.md explains each
choice); the training and data sections come from
ldattn_jax.config_utils.training_defaults().
"""

import ml_collections

from ldattn_jax.config_utils import training_defaults


def get_model_config() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.name = "lda_st"  # 'xception' | 'lda_spatial' | 'lda_temporal' | 'lda_st'
    m.image_size = 398  # backbone input; conv2 -> 196 = 14*14, block1 -> 98 = 7*14
    m.attention_size = 224  # ViT-B/16 input: a resize of the same crop
    m.patch_size = 16  # -> 14x14 attention grid
    m.embed_dim = 768  # D (ViT-B)
    m.num_templates = 12  # forgery templates = ViT-B heads
    m.num_maps = 4  # m, Table IX
    m.stack = 3  # n frames after the key frame (IV-D; Table X's "n consecutive" is n - 1)
    m.num_classes = 2
    m.middle_blocks = 8
    m.spatial_stage = "conv2"
    m.temporal_stage = "block1"
    m.dtype = "float32"  # or 'bfloat16' (compute only; params and BN stats stay fp32)
    m.vit_init = ""  # ViT-B/16 .npz (Google layout); '' = random init
    m.backbone_init = ""  # Keras Xception .keras/.weights.h5; '' = random (the paper's choice)
    m.residual_scale = 1.0  # multiplies the motion residuals before patch embedding
    m.template_init_std = 0.02  # random forgery templates' std (ViT's); unused with vit_init
    m.bn_momentum = 0.99  # Keras's BatchNorm momentum; short runs (demo) want ~0.9
    return m


def get_config() -> ml_collections.ConfigDict:
    # Training/data keys (paper V-A values) are shared by every config.
    config = training_defaults()
    config.model = get_model_config()
    # FF++ c23, all four methods (data_prep.build --dataset ffpp --compression c23).
    config.data.dir = "data/shards/ffpp_c23"
    # Read + flip in 8 threads of the training process, no worker processes. A
    # worker process costs ~2.5x the CPU per 1.9 MB stack (grain copies every
    # batch into fresh shared memory): 0 workers x 4 threads gave 666-832 stacks
    # per CPU-second, 1-2 workers 186-347 (2-vCPU Xeon, benchmarks/README.md,
    # session 10). The threads held the GIL 50-66% of the time at ~1,500
    # stacks/s, so one process should top out near 2,300-3,000 stacks/s: room
    # for the ~1,000 img/s goal. If `input wait` grows, raise data.worker_count.
    config.data.worker_count = 0
    config.data.read_threads = 8
    config.data.prefetch = 8
    return config
