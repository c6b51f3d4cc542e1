"""Lion for ngbench: an example third-party adapter package (method card + torch + JAX).

The package is found through the entry-point group ``ngbench.optimizers`` (see its
``pyproject.toml``); nothing in ngbench names it.
"""
