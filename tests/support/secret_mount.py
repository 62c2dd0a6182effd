"""A Kubernetes secret volume, as the kubelet lays it out: `tls.crt` and `tls.key` are
symlinks into `..data`, itself a symlink to a versioned directory that an update swaps
whole, atomically (one rename). File-event watches on the named files miss the swap."""

from __future__ import annotations

import shutil
from pathlib import Path


def mount(directory: Path, version: str, pair: tuple[Path, Path]) -> None:
    """Puts ``pair`` (certificate, key) in ``directory`` as version ``version``."""
    target = directory / f"..{version}"
    target.mkdir()
    shutil.copy(pair[0], target / "tls.crt")
    shutil.copy(pair[1], target / "tls.key")
    swap = directory / "..data_tmp"
    swap.symlink_to(target.name)
    swap.replace(directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
