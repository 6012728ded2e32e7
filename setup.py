"""Build glue that pyproject.toml cannot express.

Why this file exists:
- the top-level folders `services/`, `gateway/` and `shared/` are installed as
  `clawdbot.services`, `clawdbot.gateway` and `clawdbot.shared`, so nothing generic lands at the
  top of site-packages; the package list is discovered from the folders;
- the gRPC stubs (and their mypy stubs) are generated from `protos/` at build time, so a plain
  `pip install .` produces them and nothing generated is ever committed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE_ROOTS = {
    "clawdbot": "clawdbot",
    "clawdbot.services": "services",
    "clawdbot.gateway": "gateway",
    "clawdbot.shared": "shared",
    "clawdbot.examples": "examples",
}
GENERATED = "clawdbot.v1"
DATA_EXTENSIONS = (
    "pyi",
    "typed",
    "json",
    "jsonl",
    "yaml",
    "yml",
    "txt",
    "jinja",
    "html",
    "js",
    "css",
    "svg",
    "csv",
    "md",
    "ttl",
    "safetensors",
)


def generate_protos(out_root: Path = ROOT) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins over protos/."""
    from grpc_tools import protoc  # imported here: only a build needs it

    proto_root = ROOT / "protos"
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    out_dir = out_root / "clawdbot" / "v1"
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{env_path}"  # protoc-gen-mypy lives beside python
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(protos))
    (out_dir / "__init__.py").write_text(
        '"""Generated from protos/clawdbot/v1 by the build; never edit."""\n'
    )
    (out_dir / "py.typed").write_text("")


def discover_packages() -> list[str]:
    packages = [GENERATED]
    for package, folder in PACKAGE_ROOTS.items():
        base = ROOT / folder
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base)
            if any(part.startswith((".", "__")) for part in rel.parts) or "v1" in rel.parts[:1]:
                continue
            name = ".".join((package, *rel.parts)) if rel.parts else package
            packages.append(name)
    return sorted(set(packages))


class BuildWithProtos(build_py):
    """build_py that first generates the gRPC stubs into the source tree's clawdbot/v1."""

    def run(self) -> None:
        generate_protos()
        super().run()


if __name__ == "__main__":  # setuptools runs this file as __main__; `make protos` runs it as a module
    if not (ROOT / "clawdbot" / "v1" / "__init__.py").exists():
        generate_protos()
    setup(
        package_dir=PACKAGE_ROOTS | {GENERATED: "clawdbot/v1"},
        packages=discover_packages(),
        # Data beside the code (templates, static pages, shop data, bundled model), in sub-folders too.
        package_data={
            "": [f"**/*.{ext}" for ext in DATA_EXTENSIONS],
            "clawdbot": ["models/**/*"],
        },
        cmdclass={"build_py": BuildWithProtos},
    )
