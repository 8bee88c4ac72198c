"""The viewer's whole images written a slab at a time (rso.core.overlay.write_whole_products,
rso.core.nifti_slabs): byte for byte the files the whole images held in memory give, geometry, pixel
type and the displacement's LPS convention included, and a failure part way leaves the files before."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import TINY_CHANNELS, session_of

from rso.core import overlay, results
from rso.core.model import ModelConfig, RegistrationNet
from rso.core.native_grid import native_field
from rso.core.nifti_slabs import SlabFile
from rso.core.results import image_files, write_images
from rso.settings import ISOSettings

GRID = (32, 32, 32)
SIZE = (30, 26, 22)  # x, y, z
ROWS = 4  # z slices per slab when forced small: 22 = 5 x 4 + 2, six slabs, the last a short one


def small_session(initial: bool, iso: int = 0):
    """An oblique, anisotropic CT-like pair (int16 warped and difference files) after the general
    model (untrained: a field of micrometres) and ``iso`` ISO iterations (millimetres); with ``initial``
    a translation T0 too (the composed displacement is float64)."""
    rng = np.random.default_rng(0)
    images = []
    for shift in (0, 2):
        values = np.full(SIZE[::-1], -900.0, np.float32)
        values[4:18, 6 + shift : 20 + shift, 8:22] = 40.0
        image = sitk.GetImageFromArray(values + rng.normal(0, 30, values.shape).astype(np.float32))
        image.SetSpacing((1.5, 1.7, 2.5))
        image.SetOrigin((-20.0, 31.0, -140.0))
        image.SetDirection(sitk.VersorTransform((0.3, -0.2, 1.0), 0.4).GetMatrix())
        images.append(image)
    torch.manual_seed(0)
    net = RegistrationNet(ModelConfig(channels=TINY_CHANNELS, grid=GRID))
    extra = {"initial_transform": sitk.TranslationTransform(3, (1.5, -2.0, 3.0))} if initial else {}
    session = session_of(*images, net, grid=GRID, device="cpu", precision="fp32", **extra)
    session.general()
    if iso:
        session.iso(ISOSettings(iterations=iso, learning_rate=1e-2, guard=False))  # millimetres, kept
    return session


@pytest.fixture(scope="module", params=[False, True], ids=["no-T0", "T0"])
def session(request):
    return small_session(request.param, iso=3)


def force_small_slabs(monkeypatch):
    monkeypatch.setattr(overlay, "WHOLE_SLAB_VOXELS", ROWS * SIZE[0] * SIZE[1])


def test_the_streamed_files_are_the_in_memory_ones(session, tmp_path, monkeypatch):
    force_small_slabs(monkeypatch)
    with monkeypatch.context() as memory:  # the path .nii.gz files take: whole images, then written
        memory.setattr(results, "streamable", lambda reference: False)
        held = write_images(session, tmp_path / "held", compress=False)
    slabs = []
    original = overlay.window_products
    monkeypatch.setattr(
        overlay,
        "window_products",
        lambda s, window, names: slabs.append(window) or original(s, window, names),
    )
    streamed = write_images(session, tmp_path / "streamed", compress=False)
    assert len(slabs) == 6 and slabs[-1].shape[0] == 2  # several slabs, the last a short one
    assert set(streamed) == set(held) == set(image_files(compress=False))
    for name, path in streamed.items():
        assert path.name == image_files(compress=False)[name] and path.suffix in (".nii", ".json")
        assert path.read_bytes() == held[name].read_bytes(), name
    assert sorted(p.name for p in streamed["warped"].parent.iterdir()) == sorted(
        p.name for p in streamed.values()
    )  # no temporary file left

    pixel = {
        "warped": "16-bit signed integer",
        "difference": "16-bit signed integer",
        "jacobian": "32-bit float",
    }
    pixel["folding"] = "8-bit unsigned integer"
    pixel["displacement"] = (
        "vector of 64-bit float" if session.pair.initial_transform else "vector of 32-bit float"
    )
    for name, kind in pixel.items():
        image = sitk.ReadImage(str(streamed[name]))
        assert image.GetPixelIDTypeAsString() == kind, name
        assert image.GetSize() == session.fixed.GetSize(), name
        for get in ("GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(getattr(image, get)(), getattr(session.fixed, get)(), atol=1e-5)
    # Without the quality maps det J is gathered slab by slab, not read back: quality.json is the same.
    outputs = ("displacement",)
    with monkeypatch.context() as memory:
        memory.setattr(results, "streamable", lambda reference: False)
        held = write_images(session, tmp_path / "held-2", outputs, compress=False)
    streamed = write_images(session, tmp_path / "streamed-2", outputs, compress=False)
    assert set(streamed) == set(held) == {"displacement", "quality"}
    for name, path in streamed.items():
        assert path.read_bytes() == held[name].read_bytes(), name
    # The field as ITK reads it back is the session's, LPS mm (the file itself holds RAS vectors).
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(streamed["displacement"])))
    expected = sitk.GetArrayFromImage(native_field(session))
    assert (np.abs(expected).max(axis=(0, 1, 2)) > 0.5).all()  # millimetres, in every direction
    np.testing.assert_allclose(field, expected, atol=1e-5)


@pytest.mark.parametrize("where", ["computing", "writing"])
def test_a_failure_part_way_leaves_the_files_before(where, tmp_path, monkeypatch):
    session = small_session(initial=False)
    folder = tmp_path / "current"
    write_images(session, folder, compress=False)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    force_small_slabs(monkeypatch)
    calls = []

    def fail_on_the_third(original):
        def failing(*arguments, **keywords):
            calls.append(1)
            if len(calls) == 3:
                raise OSError("no space left on device")
            return original(*arguments, **keywords)

        return failing

    if where == "computing":
        monkeypatch.setattr(overlay, "window_products", fail_on_the_third(overlay.window_products))
    else:
        monkeypatch.setattr(SlabFile, "_write_at", fail_on_the_third(SlabFile._write_at))
    with pytest.raises(OSError, match="no space"):
        write_images(session, folder, compress=False)
    assert len(calls) == 3
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert after == before  # every file the one before, and no temporary file left


def test_a_slab_file_is_committed_only_whole(tmp_path):
    reference = sitk.Image([5, 4, 3], sitk.sitkFloat32)
    slab = SlabFile(tmp_path / "det.nii", reference, reference)
    slab.write(0, np.ones((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="2 of 3 slices"):
        slab.commit()
    with pytest.raises(ValueError, match="slab of shape"):
        slab.write(2, np.ones((2, 4, 5), np.float32))
    slab.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="uncompressed"):
        SlabFile(tmp_path / "det.nii.gz", reference, reference)
