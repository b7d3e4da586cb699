#!/usr/bin/env python
"""Regenerate (or check) the Python stubs of the pvae.v1 contract.

    python protos/generate.py            # rewrite protos/pvae/v1/pvae_pb2{,_grpc}.py{,i}
    python protos/generate.py --check    # exit 1 if the committed stubs differ from a fresh build
    python protos/generate.py --out DIR  # write the stubs under DIR/pvae/v1/ instead

The stubs are generated with grpcio-tools (``grpc_tools.protoc``, the ``dev`` extra) from
``protos/pvae/v1/pvae.proto`` with ``-I protos``, so the generated ``pvae_pb2_grpc.py`` imports
``from pvae.v1 import pvae_pb2``, which is where setuptools maps ``protos/pvae/v1`` (pyproject
``package-dir``). Stubs made by grpcio-tools 1.85 need grpcio >= 1.85.1 and protobuf >= 7.35.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["GENERATED", "PROTO", "PROTO_ROOT", "generate", "main", "stale_files"]

#: Root of the proto import path (``-I``): the folder holding ``pvae/v1/pvae.proto``.
PROTO_ROOT = Path(__file__).resolve().parent
#: The contract, relative to PROTO_ROOT.
PROTO = Path("pvae/v1/pvae.proto")
#: Files protoc writes next to the proto, relative to PROTO_ROOT.
GENERATED = (Path("pvae/v1/pvae_pb2.py"), Path("pvae/v1/pvae_pb2.pyi"), Path("pvae/v1/pvae_pb2_grpc.py"))


def generate(out: Path) -> list[Path]:
    """Run protoc on the contract, writing the stubs under ``out`` (as ``out/pvae/v1/...``)."""
    try:
        from grpc_tools import protoc
    except ImportError:  # the dev extra is missing
        raise SystemExit("generate.py: grpcio-tools is not installed (pip install 'pvae[dev]')") from None
    import importlib.resources

    # protoc needs the well-known types' include folder that grpcio-tools ships.
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"generate.py: protoc failed on {PROTO_ROOT / PROTO}")
    return [out / rel for rel in GENERATED]


def stale_files() -> list[Path]:
    """The committed stubs that differ from (or are missing against) a fresh build."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for rel in GENERATED:
            committed = PROTO_ROOT / rel
            fresh = Path(tmp) / rel
            if not committed.is_file() or committed.read_bytes() != fresh.read_bytes():
                stale.append(committed)
        return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed stubs are stale")
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: protos/)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path} (run: python protos/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
