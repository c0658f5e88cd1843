"""Test-wide setup.

Eight simulated CPU devices let the sharding tests compare 1-device and
8-device runs; they must be requested before jax is first imported.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep TensorFlow-free: tensorflow_datasets must never try to import it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
