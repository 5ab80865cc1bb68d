"""Where a result came from, kept in ``results.json`` so that a page or a reader can say it: the data's checksum,
the versions of Python and of the libraries that computed it, and the seeds."""

from __future__ import annotations

import hashlib
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from hacknip.evaluation.crossval import MATBENCH_SEED

LIBRARIES = ("numpy", "scipy", "scikit-learn", "torch", "ase", "pymatgen", "lightgbm", "xgboost", "optuna", "rdkit")
"""Libraries whose version is recorded when installed (with every installed ``hacknip*`` package)."""


def provenance(data: Path) -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "versions": library_versions(), "data_sha256": data_sha256(Path(data)), "seeds": {"folds": MATBENCH_SEED}}


def library_versions() -> dict[str, str]:
    versions = {}
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"] or ""
        if name.lower().startswith("hacknip") or name.lower() in LIBRARIES:
            versions[name] = distribution.version
    return dict(sorted(versions.items(), key=lambda item: item[0].lower()))


def data_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a data file; of a folder, over its files' relative paths and contents in sorted order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]+:)[^@\s]+@")


def without_passwords(text: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``, wherever a URL appears in ``text``:
    what hacknip writes (results.json, report.html) is meant to be shared."""
    return _URL_PASSWORD.sub(r"\1***@", text)
