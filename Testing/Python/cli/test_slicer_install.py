"""``rso-registration slicer-install``: this checkout's module folder in Slicer's additional module paths.

The settings file is a Slicer-<revision>.ini as Slicer 5 writes it (QSettings, INI format): the path is
added once, every other setting and every other path stays, and a second run changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rso.cli import EXIT_BAD_INPUT, main, slicer_install
from rso.cli.slicer_install import BACKUP_SUFFIX, escape_item, escape_list, unescape_list, with_module_path

MODULE = Path(slicer_install.__file__).resolve().parents[2]  # RSORegistration/ of this checkout
SETTINGS = """[General]
DontConfirmExit=true
MainWindow\\geometry=@ByteArray(\\x1\\xd9\\xd0\\xcb\\0\\x3)

[Modules]
AdditionalPaths=/opt/SlicerElastix/lib/Slicer-5.8/qt-scripted-modules, "/home/me/my modules, old"
FavoriteModules=Data, Volumes, Transforms
IgnoreModules=@Invalid()

[Python]
AdditionalPythonPaths=@Invalid()
"""
OTHER_PATHS = ["/opt/SlicerElastix/lib/Slicer-5.8/qt-scripted-modules", "/home/me/my modules, old"]


def additional_paths(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("[Modules]")
    value = next(line for line in lines[start:] if line.startswith("AdditionalPaths="))
    return unescape_list(value.partition("=")[2])


def install(settings: Path) -> int:
    return main(["slicer-install", "--slicer-settings", str(settings)])


def test_adds_the_module_folder_once_and_keeps_everything_else(tmp_path, capsys):
    settings = tmp_path / "Slicer-33216.ini"
    settings.write_text(SETTINGS)
    assert install(settings) == 0
    assert "restart Slicer" in capsys.readouterr().out
    text = settings.read_text()
    assert additional_paths(text) == [*OTHER_PATHS, MODULE.as_posix()]
    changed = [line for line in text.splitlines() if line not in SETTINGS.splitlines()]
    assert len(changed) == 1 and changed[0].startswith("AdditionalPaths=")
    assert len(text.splitlines()) == len(SETTINGS.splitlines())  # no line lost or added
    assert (tmp_path / f"Slicer-33216.ini{BACKUP_SUFFIX}").read_text() == SETTINGS
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "Slicer-33216.ini",
        f"Slicer-33216.ini{BACKUP_SUFFIX}",
    ]


def test_a_second_run_changes_nothing(tmp_path, capsys):
    settings = tmp_path / "Slicer-33216.ini"
    settings.write_text(SETTINGS)
    assert install(settings) == 0
    first, stat = settings.read_bytes(), settings.stat()
    backup = (tmp_path / f"Slicer-33216.ini{BACKUP_SUFFIX}").read_bytes()
    capsys.readouterr()
    assert install(settings) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert settings.read_bytes() == first and settings.stat().st_mtime_ns == stat.st_mtime_ns
    assert (tmp_path / f"Slicer-33216.ini{BACKUP_SUFFIX}").read_bytes() == backup


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", f"[Modules]\nAdditionalPaths={MODULE.as_posix()}\n"),
        ("[General]\nA=1", f"[General]\nA=1\n\n[Modules]\nAdditionalPaths={MODULE.as_posix()}\n"),
        ("[Modules]\nHomeModule=Welcome\n\n[Python]\n", None),
        ("[Modules]\nAdditionalPaths=@Invalid()\n", f"[Modules]\nAdditionalPaths={MODULE.as_posix()}\n"),
    ],
    ids=["empty file", "no Modules group", "no AdditionalPaths key", "empty list"],
)
def test_the_group_and_the_key_are_added_where_missing(tmp_path, text, expected):
    settings = tmp_path / "Slicer-33216.ini"
    settings.write_text(text)
    assert install(settings) == 0
    result = settings.read_text()
    if expected is None:  # the key joins its group, after the group's last key
        expected = f"[Modules]\nHomeModule=Welcome\nAdditionalPaths={MODULE.as_posix()}\n\n[Python]\n"
    assert result == expected
    assert install(settings) == 0 and settings.read_text() == expected


def test_windows_line_endings_stay(tmp_path):
    settings = tmp_path / "Slicer-33216.ini"
    settings.write_bytes(SETTINGS.replace("\n", "\r\n").encode())
    assert install(settings) == 0
    data = settings.read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n") == SETTINGS.count("\n")


def test_an_existing_entry_written_differently_counts_as_there(tmp_path):
    settings = tmp_path / "Slicer-33216.ini"
    spelled = f"{MODULE.as_posix()}/"  # a trailing slash, as a directory chooser may leave it
    settings.write_text(f"[Modules]\nAdditionalPaths=/opt/other, {spelled}\n")
    assert install(settings) == 0
    assert settings.read_text() == f"[Modules]\nAdditionalPaths=/opt/other, {spelled}\n"
    assert not (tmp_path / f"Slicer-33216.ini{BACKUP_SUFFIX}").exists()


def test_the_default_is_the_newest_revision_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("APPDATA", raising=False)
    folder = tmp_path / "slicer.org"
    folder.mkdir()
    for name in ("Slicer.ini", "Slicer-32448.ini", "Slicer-33216.ini"):
        (folder / name).write_text(SETTINGS)
    assert main(["slicer-install"]) == 0
    assert additional_paths((folder / "Slicer-33216.ini").read_text())[-1] == MODULE.as_posix()
    assert (folder / "Slicer-32448.ini").read_text() == (folder / "Slicer.ini").read_text() == SETTINGS


def test_no_settings_file_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("APPDATA", raising=False)
    for argv in (["slicer-install"], ["slicer-install", "--slicer-settings", str(tmp_path / "absent.ini")]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == EXIT_BAD_INPUT
        error = capsys.readouterr().err.strip()
        assert error.startswith("rso-registration: error: ") and "\n" not in error
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "item",
    [
        "/plain/path",
        "/a, comma; and = signs",
        " leading and trailing spaces ",
        'C:\\Users\\me\\"quoted"',
        "/home/zoë/Ärzte/模块",
        "/emoji/\U0001f600/5",
        "/tab\there/\x01/ab",
        "@at/start",
    ],
)
def test_items_survive_the_ini_list_format(item):
    assert unescape_list(escape_item(item)) == [item]
    assert unescape_list(escape_list(["/first", item, "/last"])) == ["/first", item, "/last"]
    assert escape_item(item).isascii()


def test_lists_as_qsettings_writes_them():
    assert unescape_list("@Invalid()") == [] and escape_list([]) == "@Invalid()"
    assert unescape_list("/a") == ["/a"]
    assert unescape_list("/a, /b ,  /c  ") == ["/a", "/b", "/c"]
    assert unescape_list('"/x, y" , /z') == ["/x, y", "/z"]
    # Qt reads every hex digit after \x into one 16-bit unit: the writer escapes a digit that follows one.
    assert unescape_list("/caf\\xe9, /n\\x1f600") == ["/café", "/n\uf600"]
    assert escape_item("/café") == "/caf\\xe9" and escape_item("/é1") == "/\\xe9\\x31"


def test_the_edit_is_none_when_already_listed():
    assert with_module_path(f"[Modules]\nAdditionalPaths={MODULE.as_posix()}\n", MODULE.as_posix()) is None


# What Qt 5.15's QSettings writes for a one-item Python list (a script's settings.setValue(key, [path])).
QT_ONE_ITEM = (
    r'"@Variant(\0\0\0\t\0\0\0\x1\0\0\0\n\0\0\0\x14'
    r'\0/\0o\0n\0l\0y\0,\0 \0o\0n\0\x65)"'
)


def test_a_one_item_list_a_script_stored_is_read_and_kept(tmp_path):
    assert unescape_list(QT_ONE_ITEM) == ["/only, one"]
    settings = tmp_path / "Slicer-33216.ini"
    settings.write_text(f"[Modules]\nAdditionalPaths={QT_ONE_ITEM}\n")
    assert install(settings) == 0
    assert additional_paths(settings.read_text()) == ["/only, one", MODULE.as_posix()]


def test_a_value_that_is_not_a_list_of_folders_is_refused(tmp_path, capsys):
    settings = tmp_path / "Slicer-33216.ini"
    settings.write_text("[Modules]\nAdditionalPaths=@ByteArray(abc)\n")
    with pytest.raises(SystemExit):
        install(settings)
    assert "Application Settings" in capsys.readouterr().err
    assert settings.read_text() == "[Modules]\nAdditionalPaths=@ByteArray(abc)\n"
