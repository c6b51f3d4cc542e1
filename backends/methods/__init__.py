"""Method cards: one per built-in method, shared by its torch and JAX adapters.

A card (``backends.spec.MethodCard``) holds the method's name, paper, typed hyperparameters
with defaults and ranges, search space, capabilities and presets. Keeping them here, outside
both backends, makes "same defaults in both frameworks" true by construction.
"""

#: Built-in methods in display order.
BUILTIN_METHODS: tuple[str, ...] = ("sgd", "adamw", "ef", "ief", "sf", "kfac", "fngd", "egn", "adamqlr")
