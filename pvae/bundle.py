"""The export bundle: its manifest schema and its one loader (torch-free, used by serving).

A bundle is a directory written by ``pvae-export``::

    manifest.json     this schema (below)
    rates.onnx        patches  float32 (N, P*P)            -> log_rates, rates  float32 (N, K)
    decoder.onnx      latents  float32 (N, K)              -> patches           float32 (N, P*P)
    sampler.onnx      rates float32 (N, K), seed int64 []  -> counts            int32   (N, K)
    frame.onnx        frames uint8 (B, H, W)               -> preprocessed (B,H,W), log_rates/rates (B, R*C, K),
                                                              reconstruction (B, H, W) float32, and uint8 views
    *.ts              the same paths as TorchScript modules (optional)

``manifest.json`` keys: ``format`` ("pvae-bundle"), ``format_version``, ``package_version``,
``created``, ``source_checkpoint`` {path, sha256}, ``model_config``, ``data``, ``preprocessing``,
``patch_size``, ``n_latents``, ``opset``, ``frame_policy``, ``display``, ``graphs`` {name: GraphSpec},
``torchscript`` {name: {file}}, ``files`` {relative path: sha256}, ``verification``.

A GraphSpec is {"file", "inputs": [TensorSpec], "outputs": [TensorSpec]}; a TensorSpec is
{"name", "dtype" (numpy name), "shape" (ints, or strings for dynamic axes)}.

    >>> bundle = load_bundle("runs/quick/bundle")         # BundleError on anything wrong
    >>> bundle.graph_path("frame"), bundle.n_latents
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvae.errors import BundleError

FORMAT = "pvae-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Graph names every bundle carries.
REQUIRED_GRAPHS = ("rates", "decoder", "sampler", "frame")
#: Largest rate the sampler graph draws from (larger rates are clamped to it; float32 holds 1e6
#: exactly). Part of the bundle contract: serving checks rates against it without the exporter.
SAMPLER_MAX_RATE = 1.0e6


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["shape"]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSpec:
        return cls(str(data["file"]), tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in data["outputs"]))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk: the manifest plus helpers to find its files."""

    root: Path
    manifest: dict[str, Any]
    graphs: dict[str, GraphSpec]

    @property
    def n_latents(self) -> int:
        return int(self.manifest["n_latents"])

    @property
    def patch_size(self) -> int:
        return int(self.manifest["patch_size"])

    def graph_path(self, name: str) -> Path:
        if name not in self.graphs:
            raise BundleError(f"{self.root}: bundle has no graph {name!r} (has {', '.join(sorted(self.graphs))})")
        return self.root / self.graphs[name].file

    def torchscript_path(self, name: str) -> Path | None:
        entry = (self.manifest.get("torchscript") or {}).get(name)
        return self.root / entry["file"] if entry else None


def manifest_file_names(manifest: dict[str, Any]) -> list[str]:
    """Every path a manifest names: checksummed files, graph files and TorchScript files."""
    names = [str(name) for name in (manifest.get("files") or {})]
    names += [str(spec.get("file", "")) for spec in (manifest.get("graphs") or {}).values() if isinstance(spec, dict)]
    names += [str(entry["file"]) for entry in (manifest.get("torchscript") or {}).values()
              if isinstance(entry, dict) and "file" in entry]
    return names


def check_confined(root: Path, names: list[str]) -> None:
    """Refuse paths outside the bundle directory (``../``, absolute paths, symlinks out): a bundle from
    an untrusted place must not make its reader open other files."""
    base = root.resolve()
    for name in names:
        if Path(name).is_absolute() or not (base / name).resolve().is_relative_to(base):
            raise BundleError(f"{root}: manifest file {name!r} lies outside the bundle directory; refused")


def load_bundle(path: str | Path, verify_checksums: bool = True) -> Bundle:
    """Read and validate a bundle directory: schema, required graphs, and every file's sha256."""
    root = Path(path)
    if not root.exists():
        raise BundleError(f"bundle not found: {root}")
    if not root.is_dir():
        raise BundleError(f"bundle must be a directory written by pvae-export, got a file: {root}")
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{root}: no {MANIFEST} (not a pvae bundle, or an export that did not finish)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: not a pvae bundle manifest (format marker missing)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: bundle format version {manifest.get('format_version')} is not "
                          f"supported (this pvae reads version {FORMAT_VERSION})")
    try:
        graphs = {name: GraphSpec.from_dict(spec) for name, spec in manifest["graphs"].items()}
        files = dict(manifest["files"])
        int(manifest["n_latents"])
        int(manifest["patch_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: malformed manifest: missing or bad {exc}") from None
    check_confined(root, manifest_file_names(manifest))  # before any file the manifest names is opened
    missing = [g for g in REQUIRED_GRAPHS if g not in graphs]
    if missing:
        raise BundleError(f"{manifest_path}: required graph(s) missing: {', '.join(missing)}")
    for rel, expected in files.items():
        file = root / rel
        if not file.is_file():
            raise BundleError(f"{root}: file {rel} listed in the manifest is missing")
        if verify_checksums and sha256_file(file) != expected:
            raise BundleError(f"{root}: checksum mismatch for {rel} (the file is corrupt or was modified)")
    for name, spec in graphs.items():
        if spec.file not in files:
            raise BundleError(f"{manifest_path}: graph {name!r} file {spec.file} has no checksum entry")
    return Bundle(root=root, manifest=manifest, graphs=graphs)
