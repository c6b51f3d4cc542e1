"""``singd``: structured inverse-free natural gradient (``singd`` 0.0.5), PyTorch only."""
