"""DFDC (Deepfake Detection Challenge): the paper's setting of configs/ffpp.py on DFDC shards.

Run:
  python -m data_prep.build --dataset dfdc --root /data/dfdc --out /data/shards/dfdc
  python -m ldattn_jax.train --config configs/dfdc.py --workdir runs/dfdc \
      --config.data.dir=/data/shards/dfdc

The paper does not train on DFDC; this carries its FF++ setting over unchanged
except for the class balance. DFDC's train parts hold about five fakes per real
video, so the classes are balanced by loss weights, as for Celeb-DF. Checkpoints
are chosen on the full release's `validation/` folder (its `labels.csv`), never
on `test/`: data_prep reads the split from the folder name (data_prep/README.md).
Many DFDC videos show two people; data_prep keeps the largest face of each
frame, and in a fake that face may be the real person's. So data_prep compares
each fake with the original its metadata.json names and leaves out stacks whose
face did not change (`--min-face-change`, data_prep/README.md): a fake's crops
are of a swapped face. To score such videos, `predict --faces all` scores every
face and takes the most suspicious one.
"""

import os

from ldattn_jax.config_utils import load_config_module


def get_config():
    ffpp = load_config_module(os.path.join(os.path.dirname(__file__), "ffpp.py"))
    config = ffpp.get_config()
    config.data.dir = "data/shards/dfdc"
    config.data.balance = "loss_weight"
    return config
