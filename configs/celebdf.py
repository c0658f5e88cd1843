"""Celeb-DF (v2): the paper's setting of configs/ffpp.py on the Celeb-DF shards.

Run:
  python -m ldattn_jax.train --config configs/celebdf.py --workdir runs/celebdf \
      --config.data.dir=/data/shards/celebdf

Celeb-DF has no official validation split: data_prep carves 'val' from the
training identities, and checkpoints are chosen on it (never on test). Its
fake:real ratio is about 6:1, so the classes are balanced by loss weights.
"""

import os

from ldattn_jax.config_utils import load_config_module


def get_config():
    ffpp = load_config_module(os.path.join(os.path.dirname(__file__), "ffpp.py"))
    config = ffpp.get_config()
    config.data.dir = "data/shards/celebdf"
    config.data.balance = "loss_weight"
    return config
