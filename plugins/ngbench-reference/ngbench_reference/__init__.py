"""Reference rows of current practice for ngbench, each wrapping a maintained library.

Every row is written only against the public adapter contract (``backends.spec``) with the
wrappers it ships (``wrap_torch_optimizer``, ``wrap_optax``) and, for the two libraries that must
see the model rather than the oracle (SINGD hooks ``nn.Module`` layers, kfac-jax traces a tagged
loss), the problem's model hook (``problem.module_from_flat``; ``problem.apply(..., at_tap=...)``):
the worked example of a real submission in CONTRIBUTING.md. Nothing in ngbench names this
package; it is found through the entry-point group ``ngbench.optimizers``.

=====================  =====================================  ==============================
row                    PyTorch                                JAX
=====================  =====================================  ==============================
``muon``               ``torch.optim.Muon`` (+ AdamW)         ``optax.contrib.muon``
``schedulefree-adamw`` ``schedulefree.AdamWScheduleFree``     ``optax.contrib.schedule_free_adamw``
``soap``               ``pytorch_optimizer.SOAP``             none maintained
``shampoo``            ``pytorch_optimizer.Shampoo``          none maintained
``psgd-kron``          ``pytorch_optimizer.Kron``             none that installs (see its card)
``singd``              ``singd.optim.optimizer.SINGD``        none (the library is PyTorch's)
``kfac-jax``           none (the library is JAX's)            ``kfac_jax.Optimizer``
=====================  =====================================  ==============================

Why pytorch-optimizer for SOAP, Shampoo and Kron: it runs eagerly, as the leaderboard's execution
model demands; ``heavyball`` and ``kron-torch`` compile their update with ``torch.compile``, which
the contract forbids (every adapter runs under the same eager execution model).
"""
