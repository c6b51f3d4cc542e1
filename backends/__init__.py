"""Framework backends: each builds suites into models, runs the curvature oracle and adapters.

``backends.spec`` states the adapter contract; ``backends.methods`` holds what the two
backends' adapters of one method share (hyperparameters, search space, presets); the
``torch`` and ``jax`` packages never import each other.
"""
