"""The review page's Files menu cannot leave the allowed folders (RSORegistrationReview.files): not by
an absolute path, not by ``..``, not through a symlink to a file or a folder outside."""

from __future__ import annotations

from pathlib import Path

import pytest

from rso.errors import InputError
from RSORegistrationReview.files import AllowedFolders, default_folders


@pytest.fixture
def tree(tmp_path):
    """allowed/{fixed.nii.gz, cases/moving.nii.gz, .hidden, inner.nii.gz -> cases/moving.nii.gz,
    out -> ../secret, leak.nii.gz -> ../secret/x.nii.gz}, and secret/x.nii.gz beside it."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "cases").mkdir(parents=True)
    secret.mkdir()
    for path in (allowed / "fixed.nii.gz", allowed / "cases" / "moving.nii.gz", secret / "x.nii.gz"):
        path.write_bytes(b"image")
    (allowed / ".hidden").write_text("")
    (allowed / "out").symlink_to(secret, target_is_directory=True)
    (allowed / "leak.nii.gz").symlink_to(secret / "x.nii.gz")
    (allowed / "inner.nii.gz").symlink_to(allowed / "cases" / "moving.nii.gz")  # a link that stays inside
    return allowed, secret


def test_paths_inside_are_resolved(tree):
    allowed, _ = tree
    folders = AllowedFolders([allowed])
    assert folders.inside(allowed / "fixed.nii.gz") == (allowed / "fixed.nii.gz").resolve()
    assert folders.inside(f"{allowed}/cases/../fixed.nii.gz") == (allowed / "fixed.nii.gz").resolve()
    assert folders.inside(allowed / "inner.nii.gz") == (allowed / "cases" / "moving.nii.gz").resolve()
    assert folders.inside(allowed / "export" / "new") == (allowed / "export" / "new").resolve()  # may be new
    assert folders.inside(allowed) == allowed.resolve()


@pytest.mark.parametrize(
    "path",
    [
        "{secret}/x.nii.gz",  # outright outside
        "{allowed}/../secret/x.nii.gz",  # up and out
        "{allowed}/cases/../../secret/x.nii.gz",
        "{allowed}/leak.nii.gz",  # a symlink to a file outside
        "{allowed}/out/x.nii.gz",  # through a symlinked folder
        "{allowed}/out",
        "{allowed}/..",
        "/etc/passwd",
        "{allowed}2/x.nii.gz",  # a sibling whose name starts like the allowed folder's
        "relative/x.nii.gz",
        "",
    ],
)
def test_paths_outside_are_refused(tree, path):
    allowed, secret = tree
    (allowed.parent / f"{allowed.name}2").mkdir()
    with pytest.raises(InputError) as refused:
        AllowedFolders([allowed]).inside(path.format(allowed=allowed, secret=secret), "fixed image")
    assert "\n" not in str(refused.value)


def test_the_listing_shows_only_what_lies_inside(tree):
    allowed, secret = tree
    folders = AllowedFolders([allowed])
    listed = folders.listing(allowed)
    assert [(entry.name, entry.folder) for entry in listed] == [
        ("cases", True),
        ("fixed.nii.gz", False),
        ("inner.nii.gz", False),
    ]  # folders first; the hidden file and both links that lead out are left out
    assert listed[2].path == str((allowed / "cases" / "moving.nii.gz").resolve())
    assert [entry.name for entry in folders.listing(allowed / "cases")] == ["moving.nii.gz"]
    for outside in (secret, allowed / "out", allowed / ".."):
        with pytest.raises(InputError, match="outside the folders"):
            folders.listing(outside)


def test_up_stops_at_the_allowed_folder(tree):
    allowed, _ = tree
    folders = AllowedFolders([allowed, allowed.parent / "secret"])
    assert folders.parent(allowed / "cases") == allowed.resolve()
    assert folders.parent(allowed) is None
    assert folders.inside(allowed.parent / "secret" / "x.nii.gz")  # a second allowed folder


def test_allowed_folders_must_exist_and_default_to_the_images_folders(tree, tmp_path):
    allowed, secret = tree
    with pytest.raises(InputError, match="is not a folder"):
        AllowedFolders([tmp_path / "absent"])
    with pytest.raises(InputError, match="at least one folder"):
        AllowedFolders([])
    given = default_folders(str(allowed / "fixed.nii.gz"), str(secret / "x.nii.gz"), None, "/ignored")
    assert given == [allowed, secret]
    assert default_folders(None, None, None, str(tmp_path / "session")) == [Path(tmp_path / "session")]
