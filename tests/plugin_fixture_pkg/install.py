"""Install this folder's package with pip into a target folder, as a user would install a plugin.

The tests then put the target on sys.path (and PYTHONPATH for service processes), so its
plugins are found through importlib.metadata entry points, not by a test-only shortcut.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def install(target: Path, work: Path) -> Path:
    """pip-install a copy of the package (the build leaves files beside the source) into `target`."""
    source = work / "src"
    shutil.copytree(
        HERE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "install.py")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=120,
    )
    return target
