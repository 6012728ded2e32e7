"""A model folder built once into a cache and shared by every process that asks for it.

The GGUF conversion (model/gguf.py) and the base + adapter merge (model/adapter.py) both write a
folder of a gigabyte or more that several processes may ask for at once (the tokenizer and each
inference replica start together). Each builder writes into a private staging folder and renames it
into place; the first rename wins and the others drop their copy, so no reader sees half a folder.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from clawdbot.shared.errors import FailedPrecondition, InvalidArgument


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """`target`, built by `build(staging)` unless a finished one (with config.json) is there."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cache_root(kind: str) -> Path:
    """$CLAWDBOT_CACHE_DIR/KIND, else $XDG_CACHE_HOME/clawdbot/KIND, else ~/.cache/clawdbot/KIND."""
    if os.environ.get("CLAWDBOT_CACHE_DIR"):
        return Path(os.environ["CLAWDBOT_CACHE_DIR"]) / kind
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clawdbot" / kind


def print_folder(make: Callable[[], Path]) -> int:
    """A command line's end: print the folder `make` returns (exit 0), or why it cannot (exit 2)."""
    try:
        folder = make()
    except (InvalidArgument, FailedPrecondition) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0
