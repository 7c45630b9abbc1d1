"""Regenerate the protobuf/gRPC stubs in `wire/gen/` from `proto/` (or check they are current).

Owns the generation recipe: grpc_tools' protoc with mypy-protobuf stubs, then imports rewritten
from ``kaliko.v1`` to ``wire.gen.kaliko.v1`` so the stubs live inside our package. Run
``python -m wire.generate`` after editing a .proto; ``--check`` exits 1 when the committed stubs
differ from what generation produces (the test tier runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "wire" / "gen"
IMPORT = re.compile(r"^(from|import) kaliko\.v1", re.M)


def generate(out: Path) -> None:
    # the mypy-protobuf plugins live next to this interpreter (the venv's bin/)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{grpc_include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        path.write_text(IMPORT.sub(r"\1 wire.gen.kaliko.v1", path.read_text()))
    for pkg in (out, out / "kaliko", out / "kaliko" / "v1"):
        (pkg / "__init__.py").write_text(
            '"""Generated protobuf/gRPC stubs (see wire/generate.py); do not edit."""\n'
        )


def differences(a: Path, b: Path) -> list[str]:
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    names |= {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return sorted(
        str(n)
        for n in names
        if not ((a / n).exists() and (b / n).exists() and filecmp.cmp(a / n, b / n, shallow=False))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if wire/gen is not current")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if opts.check:
            diff = differences(Path(tmp), GEN_DIR)
            if diff:
                print("wire/gen is stale; run `python -m wire.generate`:", *diff, sep="\n  ")
                sys.exit(1)
            return
        shutil.rmtree(GEN_DIR, ignore_errors=True)
        shutil.copytree(tmp, GEN_DIR)


if __name__ == "__main__":
    main()
