"""ldattn_jax: long-distance attention deepfake detector (Lu et al., TNNLS 2023) in JAX/Flax."""

__version__ = "0.1.0"
