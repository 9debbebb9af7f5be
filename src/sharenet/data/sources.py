"""Where data sets are found: --data-dir, $SHARENET_DATA, system packages, then a checked download.

Every failure names what to install or where to put the files, since most machines that run
sharenet in CI or on clusters have no internet.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from ..errors import SharenetError
from ..storage import file_digest


class DataError(SharenetError):
    """A data set that is missing, incomplete or unreadable."""


def candidate_dirs(data_dir: str | None, subdirs: tuple[str, ...], system: tuple[str, ...] = ()) -> list[Path]:
    """Search order: the given dir (and its known subdirs), $SHARENET_DATA (likewise), system dirs."""
    roots = [Path(p).expanduser() for p in (data_dir, os.environ.get("SHARENET_DATA")) if p]
    dirs = [d for root in roots for d in (root, *(root / s for s in subdirs))]
    return dirs + [Path(p) for p in system]


def find_dir(dirs: list[Path], required: tuple[str, ...]) -> Path | None:
    """The first directory that holds every required file."""
    return next((d for d in dirs if all((d / f).is_file() for f in required)), None)


def download(files: dict[str, str], base_url: str, target: Path, hint: str, algo: str = "md5") -> Path:
    """Fetch `files` (name -> digest, the publisher's `algo`) from `base_url` into `target`, verified."""
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        path = target / name
        if path.is_file() and file_digest(path, algo) == digest:
            continue
        tmp = path.with_suffix(path.suffix + ".part")
        try:
            with urllib.request.urlopen(base_url + name, timeout=30) as r, open(tmp, "wb") as f:
                f.write(r.read())
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"could not download {base_url + name} ({e}); {hint}") from None
        if file_digest(tmp, algo) != digest:
            tmp.unlink(missing_ok=True)
            raise DataError(f"downloaded {name} has the wrong checksum; {hint}")
        tmp.replace(path)
    return target


def cache_dir(dataset: str) -> Path:
    """Where a download goes: $SHARENET_DATA/<dataset>, else ~/.cache/sharenet/<dataset>."""
    if os.environ.get("SHARENET_DATA"):
        return Path(os.environ["SHARENET_DATA"]) / dataset
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sharenet" / dataset
