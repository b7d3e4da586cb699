#!/usr/bin/env python
"""Regenerate (or check) the Python stubs of the service contracts.

    python protos/generate.py            # rewrite the committed stubs
    python protos/generate.py --check    # exit 1 if the committed stubs differ from a fresh build
    python protos/generate.py --out DIR  # write the stubs under DIR instead (same relative paths)

Two contracts, generated with grpcio-tools (``grpc_tools.protoc``, the ``dev`` extra):

- ``pvae/v1/pvae.proto`` (ours), with ``-I protos``: the generated ``pvae_pb2_grpc.py`` imports
  ``from pvae.v1 import pvae_pb2``, which is where setuptools maps ``protos/pvae/v1``.
- ``inference/grpc_service.proto`` and ``inference/model_config.proto``: the Open Inference
  Protocol (KServe v2) with Triton's extensions, vendored unchanged from
  triton-inference-server/common (BSD-3-Clause, ``protos/inference/LICENSE``; see
  ``protos/inference/README.md``). They import each other by bare file name, so they are compiled
  with ``-I protos/inference`` and the generated top-level imports (``import model_config_pb2``)
  are rewritten to package-relative ones (``from . import model_config_pb2``); setuptools maps
  ``protos/inference`` onto ``pvae.inference``.

Stubs made by grpcio-tools 1.85 need grpcio >= 1.85.1 and protobuf >= 7.35.1.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONTRACTS", "GENERATED", "PROTO_ROOT", "Contract", "generate", "main", "stale_files"]

#: The folder holding every contract (``protos/``).
PROTO_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Contract:
    """One protoc run: an include folder, its .proto files, and the stub modules they make."""

    include: Path
    """Import root (``-I``), relative to PROTO_ROOT; stubs land under the same relative folder."""
    protos: tuple[str, ...]
    """The .proto files, relative to ``include``."""
    relative_imports: tuple[str, ...] = ()
    """Generated modules imported by bare name (``import x_pb2``) that must become ``from . import x_pb2``."""

    def outputs(self) -> list[Path]:
        """Stub files, relative to PROTO_ROOT."""
        files = []
        for proto in self.protos:
            stem = proto.removesuffix(".proto")
            files += [self.include / f"{stem}_pb2.py", self.include / f"{stem}_pb2.pyi"]
            if _has_service(PROTO_ROOT / self.include / proto):
                files.append(self.include / f"{stem}_pb2_grpc.py")
        return files


def _has_service(proto: Path) -> bool:
    return re.search(r"^service\s", proto.read_text(), flags=re.MULTILINE) is not None


CONTRACTS = (
    Contract(Path("."), ("pvae/v1/pvae.proto",)),
    Contract(Path("inference"), ("model_config.proto", "grpc_service.proto"),
             relative_imports=("model_config_pb2", "grpc_service_pb2")),
)
#: Every committed stub, relative to PROTO_ROOT.
GENERATED = tuple(path for contract in CONTRACTS for path in contract.outputs())


def generate(out: Path) -> list[Path]:
    """Run protoc on every contract, writing the stubs under ``out`` (same layout as protos/)."""
    try:
        from grpc_tools import protoc
    except ImportError:  # the dev extra is missing
        raise SystemExit("generate.py: grpcio-tools is not installed (pip install 'pvae[dev]')") from None
    import importlib.resources

    # protoc needs the well-known types' include folder that grpcio-tools ships.
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    written: list[Path] = []
    for contract in CONTRACTS:
        include = PROTO_ROOT / contract.include
        target = out / contract.include
        target.mkdir(parents=True, exist_ok=True)
        args = ["grpc_tools.protoc", f"-I{include}", f"-I{well_known}", f"--python_out={target}",
                f"--pyi_out={target}", f"--grpc_python_out={target}", *(str(include / p) for p in contract.protos)]
        if protoc.main(args) != 0:
            raise SystemExit(f"generate.py: protoc failed on {', '.join(contract.protos)}")
        for stray in set(target.glob("*_pb2_grpc.py")) - {out / rel for rel in contract.outputs()}:
            stray.unlink()  # the gRPC plugin writes an empty module for a file without services
        for rel in contract.outputs():
            path = out / rel
            if contract.relative_imports:
                text = path.read_text()
                for module in contract.relative_imports:
                    text = re.sub(rf"^import {module} as ", f"from . import {module} as ", text, flags=re.MULTILINE)
                    text = re.sub(rf"^import {module}$", f"from . import {module}", text, flags=re.MULTILINE)
                path.write_text(text)
            written.append(path)
    return written


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
