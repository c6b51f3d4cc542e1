"""The harness: run specs, the run loop, measurement, sweeps, executors, the CLI and public API.

Scripts and notebooks use :mod:`harness.api`.
"""
