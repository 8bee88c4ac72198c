"""``rso-registration series DIR``: the DICOM series of a folder, as a table or JSON, to pick one."""

from __future__ import annotations

import json

import pytest
from core.test_dicom import PHASES, write_two_series  # the two-phase DICOM folder of the engine's test

from rso.cli import EXIT_BAD_INPUT, main


def test_the_table_lists_each_series(tmp_path, capsys):
    write_two_series(tmp_path)
    assert main(["series", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["index", "slices", "phase", "/", "time", "description", "series", "UID"]
    assert lines[1].split() == ["0", "5", "phase", "50%", "Phase", "50%", PHASES[1]["uid"]]
    assert lines[2].split() == ["1", "4", "phase", "0%", "Phase", "0%", PHASES[0]["uid"]]
    assert len(lines) == 3


def test_json_gives_the_tags(tmp_path, capsys):
    write_two_series(tmp_path)
    assert main(["series", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(entry["index"], entry["uid"], entry["slices"]) for entry in listed] == [
        (0, PHASES[1]["uid"], 5),
        (1, PHASES[0]["uid"], 4),
    ]
    assert listed[1]["description"] == "Phase 0%" and listed[1]["phase_percent"] == "0"
    assert listed[1]["when"] == "phase 0%" and listed[1]["number"] == "2"


def test_a_folder_without_dicom_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    for folder, expected in (
        (tmp_path, f"no DICOM series in folder {tmp_path}"),
        (tmp_path / "absent", f"{tmp_path / 'absent'} is not a folder"),
    ):
        with pytest.raises(SystemExit) as ended:
            main(["series", str(folder)])
        assert ended.value.code == EXIT_BAD_INPUT
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"rso-registration: error: {expected}"
