"""Write a directory next to its target, then swap it into place: the bundle's and the Triton
repository's way to never leave a half-written output where a loader would find it.

    >>> with staging_dir(target, "bundle") as staging:
    ...     (staging / "manifest.json").write_text(...)        # build everything in staging
    ...     swap_into_place(staging, target, "bundle")          # one rename; an old target is replaced
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pvae.errors import BundleError

__all__ = ["fresh_dir", "staging_dir", "swap_into_place"]

#: Attempts at a unique random directory name (collisions of 32 random bits are rare).
NAME_ATTEMPTS = 16


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new uniquely named directory. Not tempfile.mkdtemp: that makes it 0700, and an output
    directory should get the usual umask-derived permissions."""
    for _ in range(NAME_ATTEMPTS):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"could not create a unique directory {prefix}* in {parent}")


@contextmanager
def staging_dir(target: Path, what: str) -> Iterator[Path]:
    """A hidden new directory next to ``target`` to build the ``what`` in, removed on the way out
    (after a successful swap it no longer exists). BundleError if it cannot be made."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = fresh_dir(target.parent, f".{target.name}.partial-")
    except OSError as exc:
        raise BundleError(f"cannot write the {what} to {target}: {exc.strerror or exc}") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_into_place(staging: Path, target: Path, what: str) -> None:
    """Rename ``staging`` onto ``target``. Whatever is at ``target`` is moved aside first, put back if the
    rename fails (BundleError naming the ``what``), and deleted after. The caller checks beforehand
    that ``target`` may be replaced."""
    old: Path | None = None
    if target.exists():
        old = fresh_dir(target.parent, f".{target.name}.old-")
        os.replace(target, old / "previous")
    try:
        os.replace(staging, target)
    except OSError as exc:
        if old is not None:  # put the previous one back
            os.replace(old / "previous", target)
        raise BundleError(f"cannot move the {what} into {target}: {exc.strerror or exc}") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
