"""Where the GPU-size suites find their files: the data directory.

Resolution order: an explicit path (``--data-dir`` on the command line), else the environment
variable ``NGBENCH_DATA_DIR``, else ``~/ngbench-data``. Command-line options set the variable
(:func:`set_data_dir`), so worker processes started afterwards see the same directory.

Nothing here downloads: a suite whose files are missing refuses to start with
:class:`~suites.spec.DataUnavailableError`, whose one-line message names the exact files and
where to place them (``ngbench data check`` lists them for every suite).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "NGBENCH_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/ngbench-data")


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit``, else ``$NGBENCH_DATA_DIR``, else ``~/ngbench-data``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else DEFAULT_DATA_DIR.expanduser()


def set_data_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` the data directory of this process and of the workers it starts."""
    resolved = Path(path).expanduser().resolve()
    os.environ[ENV_VAR] = str(resolved)
    return resolved


def missing_message(suite: str, root: Path, missing: list[str]) -> str:
    """The one-line refusal of a suite whose files are missing."""
    return (
        f"suite {suite!r} needs data that is not there: {'; '.join(missing)} "
        f"(data directory {root}; set it with --data-dir or ${ENV_VAR}; `ngbench data check` lists every suite's files)"
    )
