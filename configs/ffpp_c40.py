"""FF++ c40 (heavy compression): the paper's setting of configs/ffpp.py on the c40 shards.

Run:
  python -m ldattn_jax.train --config configs/ffpp_c40.py --workdir runs/ffpp_c40 \
      --config.data.dir=/data/shards/ffpp_c40
"""

import os

from ldattn_jax.config_utils import load_config_module


def get_config():
    ffpp = load_config_module(os.path.join(os.path.dirname(__file__), "ffpp.py"))
    config = ffpp.get_config()
    config.data.dir = "data/shards/ffpp_c40"
    return config
