"""``kfac-jax``: K-FAC as DeepMind ships it (``kfac_jax`` 0.0.8), JAX only."""
