"""A DICOM folder with several series (a 4D CT export: one per phase) is refused with a list of them,
and ``read_image(series=...)`` reads the one named, by series UID or index; a series whose slices repeat
positions (two phases under one UID) or skip one is refused, where ITK would stack them with a warning."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from rso.core.dicom import list_series
from rso.core.imageio import read_image
from rso.core.inputs import read_inputs
from rso.errors import InputError

STUDY_UID = "1.2.826.0.1.3680043.2.1125.1"
# Two phases of one study. The second UID sorts after the first, but its series number comes first:
# the listing follows the series numbers.
PHASES = (
    {"uid": "1.2.826.0.1.3680043.2.1125.7.1", "number": "2", "description": "Phase 0%", "phase": "0"},
    {"uid": "1.2.826.0.1.3680043.2.1125.7.2", "number": "1", "description": "Phase 50%", "phase": "50"},
)


def phase_image(depth: int, offset: int) -> sitk.Image:
    values = np.random.default_rng(depth).integers(-1000, 1000, size=(depth, 10, 12)).astype(np.int16)
    image = sitk.GetImageFromArray(values + np.int16(offset))
    image.SetSpacing((0.9, 0.8, 2.5))
    image.SetOrigin((-5.0, 10.0, -200.0))
    return image


def write_series(image: sitk.Image, folder, phase: dict, prefix: str = "series", first: int = 0) -> None:
    """One file per slice, as SimpleITK's "Dicom Series From Array" example writes them, in one series;
    ``prefix`` and ``first`` (the first instance's number) let a second image join the same series."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": STUDY_UID,
            "0020|000e": phase["uid"],
            "0020|0011": phase["number"],
            "0008|103e": phase["description"],
            "0020|9241": phase["phase"],
            "0008|0018": f"{phase['uid']}.{first + k}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(str(v) for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": str(image.GetSpacing()[2]),
            "0028|1052": "0",
            "0028|1053": "1",
        }.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{phase['number']}_{k:03d}.dcm"))
        writer.Execute(slice_image)


def write_two_series(folder) -> dict:
    """Two series in ``folder`` (4 and 5 slices); returns {UID: the image written}."""
    images = {}
    for depth, phase in zip((4, 5), PHASES):
        images[phase["uid"]] = phase_image(depth, offset=100 * depth)
        write_series(images[phase["uid"]], folder, phase)
    return images


def same_image(read: sitk.Image, written: sitk.Image) -> bool:
    return read.GetSize() == written.GetSize() and np.array_equal(
        sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(written).astype(np.float32)
    )


def test_list_series_gives_each_series_with_its_tags(tmp_path):
    write_two_series(tmp_path)
    found = list_series(tmp_path)
    assert [info.uid for info in found] == [PHASES[1]["uid"], PHASES[0]["uid"]]  # by series number
    assert [info.index for info in found] == [0, 1] and [info.slices for info in found] == [5, 4]
    assert found[0].description == "Phase 50%" and found[0].phase_percent == "50"
    assert found[1].line() == f"1: {PHASES[0]['uid']} 'Phase 0%' phase 0% 4 slices"
    assert found[0].to_dict()["number"] == "1"


def test_a_folder_with_two_series_is_refused_with_both_listed(tmp_path):
    write_two_series(tmp_path)
    with pytest.raises(InputError) as refused:
        read_image(tmp_path, "fixed image")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"fixed image folder {tmp_path} holds 2 DICOM series")
    assert "--fixed-series/--moving-series" in message
    for phase, slices in zip(PHASES, (4, 5)):
        assert f"{phase['uid']} '{phase['description']}' phase {phase['phase']}% {slices} slices" in message


@pytest.mark.parametrize("by", ["uid", "index"])
def test_series_picks_the_one_named(tmp_path, by):
    images = write_two_series(tmp_path)
    for index, uid in enumerate((PHASES[1]["uid"], PHASES[0]["uid"])):
        read = read_image(tmp_path, "moving image", series=uid if by == "uid" else str(index))
        assert same_image(read, images[uid])


def test_an_unknown_series_is_refused_with_the_list(tmp_path):
    write_two_series(tmp_path)
    with pytest.raises(InputError, match=r"has no DICOM series '7'; it holds: 0: .*; 1: "):
        read_image(tmp_path, series="7")


def test_one_series_needs_no_choice_and_a_file_takes_none(tmp_path):
    image = phase_image(4, 0)
    write_series(image, tmp_path, PHASES[0])
    assert same_image(read_image(tmp_path), image)
    assert same_image(read_image(tmp_path, series=PHASES[0]["uid"]), image)
    assert same_image(read_image(tmp_path, series="0"), image)
    with pytest.raises(InputError, match="no DICOM series '1'"):
        read_image(tmp_path, series="1")
    sitk.WriteImage(image, str(tmp_path / "image.nrrd"))
    with pytest.raises(InputError, match="is a file"):
        read_image(tmp_path / "image.nrrd", series="0")


def test_a_folder_without_series_lists_none(tmp_path):
    (tmp_path / "notes.txt").write_text("no DICOM here")
    assert list_series(tmp_path) == []
    with pytest.raises(InputError, match="not a folder"):
        list_series(tmp_path / "notes.txt")


def test_register_refuses_an_ambiguous_folder_and_its_series_flag_picks_one(tmp_path, capsys):
    """`register` on a two-series folder: refused in one line naming the flags; --moving-series picks."""
    from rso.cli import main
    from rso.settings import PairInputs

    (tmp_path / "dicom").mkdir()
    images = write_two_series(tmp_path / "dicom")
    fixed = tmp_path / "fixed.nii.gz"
    sitk.WriteImage(images[PHASES[0]["uid"]], str(fixed))
    args = [
        "register",
        "--fixed",
        str(fixed),
        "--moving",
        str(tmp_path / "dicom"),
        "--out",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds 2 DICOM series" in error and "--fixed-series/--moving-series" in error
    assert not (tmp_path / "o").exists()
    picked = read_inputs(
        PairInputs(fixed=str(fixed), moving=str(tmp_path / "dicom"), moving_series=PHASES[1]["uid"])
    )["moving"]
    assert same_image(picked, images[PHASES[1]["uid"]])


def test_the_worker_opens_the_series_named_and_refuses_an_ambiguous_folder(tmp_path):
    """The worker's open (rso.service.sessions.new_session) takes fixed_series and moving_series as
    register does."""
    from rso.service.protocol import check_args
    from rso.service.sessions import new_session

    images = write_two_series(tmp_path)
    engine = {"channels": [4, 8, 16, 32, 64], "grid": [16, 32, 32], "device": "cpu"}
    args = check_args("open", {"fixed": str(tmp_path), "moving": str(tmp_path), **engine})
    with pytest.raises(InputError, match="holds 2 DICOM series") as error:
        new_session(args)
    assert PHASES[0]["uid"] in str(error.value) and PHASES[1]["uid"] in str(error.value)
    chosen = {"fixed_series": PHASES[0]["uid"], "moving_series": "0"}  # by UID, and by the listed index
    session = new_session(check_args("open", {**args, **chosen}))
    assert same_image(session.fixed, images[PHASES[0]["uid"]])
    assert same_image(session.pair.original_moving, images[PHASES[1]["uid"]])


def test_two_phases_under_one_series_uid_are_refused(tmp_path):
    """ITK would stack both phases' slices into one volume at half the spacing."""
    write_series(phase_image(6, 0), tmp_path, PHASES[0])
    write_series(phase_image(6, 500), tmp_path, PHASES[0], prefix="again", first=100)
    with pytest.raises(InputError, match="holds 12 slices at only 6 positions: several phases"):
        read_image(tmp_path, "fixed image")


def test_a_series_with_a_missing_slice_is_refused(tmp_path):
    """ITK would spread the remaining slices evenly, every slice after the gap shifted."""
    write_series(phase_image(8, 0), tmp_path, PHASES[0])
    (tmp_path / f"series{PHASES[0]['number']}_003.dcm").unlink()
    with pytest.raises(InputError, match="not evenly spaced .*2.5 to 5 mm apart.*missing slice"):
        read_image(tmp_path, "fixed image")


def test_a_gantry_tilted_series_is_refused(tmp_path):
    """Each slice shifted 0.5 mm along y per 2.5 mm step (about 11 degrees): ITK's grid would drop the
    shear."""
    image = phase_image(5, 0)
    image.SetDirection((1, 0, 0, 0, 1, 0.2, 0, 0, 1))  # the slice axis leans along y
    write_series(image, tmp_path, PHASES[0])
    with pytest.raises(InputError, match="gantry tilt of about 11.3 degrees"):
        read_image(tmp_path, "fixed image")
