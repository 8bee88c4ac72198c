"""``slicer-install``: add this checkout's module folder to 3D Slicer's additional module paths.

Slicer keeps that list under ``[Modules]``, key ``AdditionalPaths``, in its revision-specific user
settings, ``Slicer-<revision>.ini`` beside ``Slicer.ini`` (``qSlicerSettingsModulesPanel`` registers
the key on ``revisionUserSettings()``, and the module factory reads it from there at start-up). The
value is a QSettings INI string list: items joined by ", ", an item quoted when it holds ``,``, ``;``
or ``=`` or starts or ends with a space, ``\\`` and ``"`` escaped, other characters outside printable
ASCII written as ``\\xHHHH`` (UTF-16 units), and ``@Invalid()`` for an empty list.

Only the ``AdditionalPaths`` line changes (or is added, with ``[Modules]`` if need be); every other
byte of the file stays as it was. The file is replaced atomically, a copy of the old one is kept
beside it, and a second run finds the folder already listed and writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SECTION = "Modules"
KEY = "AdditionalPaths"
BACKUP_SUFFIX = ".rso-registration.bak"
REVISION_FILE = re.compile(r"Slicer-(\d+)\.ini")
QT_VARIANT_LIST, QT_STRING, QT_STRING_LIST = 9, 10, 11  # QMetaType ids in a serialised QVariant
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPES.update({c: c for c in "\"'?\\"})
_WRITE_ESCAPES = {"\0": "\\0", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_WRITE_ESCAPES.update({"\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\"})
_HEX = "0123456789abcdefABCDEF"


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `slicer-install [--slicer-settings FILE]`."""
    parser = subparsers.add_parser(
        "slicer-install",
        help="add this checkout's Slicer module to 3D Slicer's additional module paths",
        description="Add the folder RSORegistration/ of this checkout (the one holding RSORegistration.py) "
        "to Slicer's additional module paths (settings group [Modules], key AdditionalPaths), as "
        "Edit > Application Settings > Modules does. Idempotent; the settings file is replaced atomically "
        f"and the old one kept as FILE{BACKUP_SUFFIX}. Restart Slicer afterwards.",
    )
    parser.add_argument(
        "--slicer-settings",
        metavar="FILE",
        type=Path,
        help="Slicer's revision-specific settings file (default: the newest Slicer-<revision>.ini in "
        "~/.config/slicer.org, or %%APPDATA%%\\slicer.org on Windows; Slicer writes it on its first start)",
    )
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    settings = args.slicer_settings or find_settings_file()
    if not REVISION_FILE.fullmatch(settings.name):
        log.warning("Slicer reads its module paths from Slicer-<revision>.ini, not from %s", settings.name)
    folder = module_folder()
    changed = install(settings, folder)
    if changed:
        print(f"added {folder} to Slicer's additional module paths in {settings}; restart Slicer")
        print(f"the previous settings are kept in {backup_path(settings)}")
    else:
        print(f"{folder} is already in Slicer's additional module paths in {settings}; nothing changed")
    return 0


def module_folder() -> Path:
    """This checkout's Slicer module folder: RSORegistration/, which holds RSORegistration.py and rso/."""
    from rso.errors import InputError

    folder = Path(__file__).resolve().parents[2]
    if not (folder / "RSORegistration.py").is_file():
        raise InputError(
            f"{folder} holds no RSORegistration.py: run slicer-install from a clone of the repository "
            "(installed with pip install -e)"
        )
    return folder


def settings_folder() -> Path:
    """Where Slicer (QSettings, INI format, user scope, organisation slicer.org) keeps its settings."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "slicer.org"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "slicer.org"


def find_settings_file(folder: Path | None = None) -> Path:
    """The newest ``Slicer-<revision>.ini`` in ``folder`` (default: Slicer's settings folder)."""
    from rso.errors import InputError

    folder = settings_folder() if folder is None else folder
    found = sorted(
        (int(m.group(1)), path)
        for path in (folder.iterdir() if folder.is_dir() else ())
        if (m := REVISION_FILE.fullmatch(path.name)) and path.is_file()
    )
    if not found:
        raise InputError(
            f"no Slicer settings file (Slicer-<revision>.ini) in {folder}: start Slicer once, "
            "or name the file with --slicer-settings FILE"
        )
    if len(found) > 1:
        log.info("several Slicer versions' settings in %s; using the newest, %s", folder, found[-1][1].name)
    return found[-1][1]


def install(settings: Path, folder: Path) -> bool:
    """Add ``folder`` to ``settings``' [Modules] AdditionalPaths; False when it was already there."""
    from rso.errors import InputError

    if not settings.is_file():
        raise InputError(f"Slicer settings file {settings} does not exist")
    raw = settings.read_bytes()
    text = raw.decode("utf-8", errors="surrogateescape")
    try:
        updated = with_module_path(text, folder.as_posix())
    except ValueError as exc:
        raise InputError(
            f"cannot read [{SECTION}] {KEY} in {settings} ({exc}): add {folder} under Slicer's "
            "Edit > Application Settings > Modules > Additional module paths instead"
        ) from None
    if updated is None:
        return False
    shutil.copy2(settings, backup_path(settings))
    write_atomically(settings, updated.encode("utf-8", errors="surrogateescape"))
    return True


def backup_path(settings: Path) -> Path:
    return settings.with_name(settings.name + BACKUP_SUFFIX)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def with_module_path(text: str, path: str) -> str | None:
    """``text`` (an INI file) with ``path`` added to [Modules] AdditionalPaths; None if already listed."""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if "\r\n" in text else "\n"
    start, end = section_span(lines, SECTION)
    if start is None:
        block = f"[{SECTION}]{newline}{KEY}={escape_list([path])}{newline}"
        separator = "" if not text or text.endswith("\n") else newline
        return text + separator + (newline if text.strip() else "") + block
    for index in range(start + 1, end):
        key, sep, value = lines[index].partition("=")
        if sep and key.strip() == KEY:
            return _with_item(lines, index, value, path)
    insert_at = end
    while insert_at > start + 1 and not lines[insert_at - 1].strip():
        insert_at -= 1  # after the group's last key, before the blank line that ends it
    if not lines[insert_at - 1].endswith("\n"):
        lines[insert_at - 1] += newline
    lines.insert(insert_at, f"{KEY}={escape_list([path])}{newline}")
    return "".join(lines)


def _with_item(lines: list[str], index: int, value: str, path: str) -> str | None:
    """The file with ``path`` appended to the list on line ``index``; None if it is there already."""
    body = value.rstrip("\r\n")
    ending = value[len(body) :]
    items = unescape_list(body)
    if any(same_path(item, path) for item in items):
        return None
    key = lines[index].partition("=")[0]
    plain_list = items and not body.lstrip(' "').startswith("@")  # not a @Variant(...) one-item list
    new_value = f"{body.rstrip()}, {escape_item(path)}" if plain_list else escape_list([*items, path])
    lines[index] = f"{key}={new_value}{ending}"
    return "".join(lines)


def section_span(lines: list[str], name: str) -> tuple[int | None, int]:
    """(index of the ``[name]`` header, index of the next header or the end); (None, len) when absent."""
    start = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if start is not None:
                return start, index
            if stripped[1:-1].strip() == name:
                start = index
    return start, len(lines)


def same_path(item: str, path: str) -> bool:
    """Whether a listed module path is ``path`` (absolute items compared resolved, case as the OS does)."""
    if not os.path.isabs(item):
        return False  # Slicer reads a relative item from its own home folder, never this checkout

    def normal(p: str) -> str:
        return os.path.normcase(os.path.realpath(p))

    return normal(item) == normal(path)


def escape_list(items: list[str]) -> str:
    """A string list as QSettings writes it in an INI file."""
    return ", ".join(escape_item(item) for item in items) if items else "@Invalid()"


def escape_item(item: str) -> str:
    """One string as QSettings writes it: escaped, ASCII only, quoted where a reader would split or trim."""
    if item.startswith("@"):
        item = "@" + item  # QSettings reads a leading @ as a type marker, @@ as a plain @
    out, after_escape = [], False
    for unit in _utf16_units(item):
        char = chr(unit)
        if after_escape and char in _HEX:
            out.append(f"\\x{unit:x}")  # a reader would take a hex digit for part of the escape before
            continue
        after_escape = False
        if char in _WRITE_ESCAPES:
            out.append(_WRITE_ESCAPES[char])
            after_escape = char == "\0"
        elif unit <= 0x1F or unit >= 0x7F:
            out.append(f"\\x{unit:x}")
            after_escape = True
        else:
            out.append(char)
    text = "".join(out)
    if any(c in item for c in ",;=") or text[:1] == " " or text[-1:] == " ":
        text = f'"{text}"'
    return text


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", errors="surrogatepass")
    return [int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)]


def unescape_list(value: str) -> list[str]:
    """The string list a QSettings INI value holds ([] for ``@Invalid()`` or nothing).

    A list of one item that a script stored as a Python list reads ``@Variant(...)``: a QDataStream
    QVariant, decoded here. Raises ValueError for any other typed value (it cannot be a list of paths).
    """
    value = value.strip()
    if not value or value == "@Invalid()":
        return []
    items = [_units_to_text(units) for units in _split_units(value)]
    if len(items) == 1 and items[0].startswith("@Variant(") and items[0].endswith(")"):
        return _variant_strings(items[0][len("@Variant(") : -1].encode("latin-1"))
    if any(item.startswith("@") and not item.startswith("@@") for item in items):
        raise ValueError("a value that is not a list of folders")
    return [item[1:] if item.startswith("@") else item for item in items]


def _variant_strings(data: bytes) -> list[str]:
    """The strings of a serialised QVariant (QDataStream Qt_4_0): a QString, QStringList or QVariantList."""

    def number(at: int) -> tuple[int, int]:
        if at + 4 > len(data):
            raise ValueError("a truncated @Variant value")
        return int.from_bytes(data[at : at + 4], "big"), at + 4

    def string(at: int) -> tuple[str, int]:
        size, at = number(at)
        size = 0 if size == 0xFFFFFFFF else size  # a null QString
        return data[at : at + size].decode("utf-16-be", errors="surrogatepass"), at + size

    def variant(at: int) -> tuple[list[str], int]:
        kind, at = number(at)  # QSettings writes QDataStream::Qt_4_0, which has no is-null flag
        if kind == QT_STRING:
            text, at = string(at)
            return [text], at
        if kind not in (QT_VARIANT_LIST, QT_STRING_LIST):
            raise ValueError(f"a @Variant of type {kind}, not a list of folders")
        count, at = number(at)
        found: list[str] = []
        for _ in range(count):
            parts, at = variant(at) if kind == QT_VARIANT_LIST else _one(string(at))
            found.extend(parts)
        return found, at

    return variant(0)[0]


def _one(result: tuple[str, int]) -> tuple[list[str], int]:
    return [result[0]], result[1]


def _split_units(value: str) -> list[list[int]]:
    """The items of a value as UTF-16 units: split at unquoted commas, escapes decoded, ends trimmed."""
    items: list[list[int]] = []
    current: list[int] = []
    keep = 0  # units that trailing-space trimming may not remove (escaped or quoted ones)
    quoted = in_quotes = False
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            units, i = _read_escape(value, i + 1)
            current.extend(units)
            keep = len(current)
            continue
        if char == '"':
            in_quotes, quoted = not in_quotes, True
            i += 1
            while not in_quotes and i < len(value) and value[i] in " \t":
                i += 1  # spaces after a closing quote are not part of the item
            continue
        elif char == "," and not in_quotes:
            items.append(current if quoted else _trimmed(current, keep))
            current, keep, quoted = [], 0, False
            i += 1
            while i < len(value) and value[i] in " \t":
                i += 1
            continue
        elif char == ";" and not in_quotes:
            break  # a comment
        else:
            current.extend(_utf16_units(char))
            keep = len(current) if in_quotes else keep
        i += 1
    items.append(current if quoted else _trimmed(current, keep))
    return items


def _read_escape(value: str, i: int) -> tuple[list[int], int]:
    """The units of the escape that starts at ``value[i]`` (after the backslash), and the next index."""
    char = value[i]
    if char in _ESCAPES:
        return [ord(_ESCAPES[char])], i + 1
    for base, digits, skip in ((16, _HEX, 1), (8, "01234567", 0)):
        if (base == 16 and char == "x") or (base == 8 and char in digits):
            j = i + skip
            while j < len(value) and value[j] in digits:
                j += 1
            number = int(value[i + skip : j] or "0", base) & 0xFFFF
            return [number], j
    return [], i + 1  # Qt skips an unknown escape


def _trimmed(units: list[int], keep: int) -> list[int]:
    end = len(units)
    while end > keep and units[end - 1] in (0x20, 0x09):
        end -= 1
    return units[:end]


def _units_to_text(units: list[int]) -> str:
    data = b"".join(unit.to_bytes(2, "little") for unit in units)
    return data.decode("utf-16-le", errors="surrogatepass")
