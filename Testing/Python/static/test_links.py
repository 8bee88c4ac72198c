"""No dead links: README.md, docs/, the module's help, the catalog entry and the CMake metadata.

Relative links and image paths must name files (or folders) in this repository, and a ``#anchor`` into a
Markdown file one of its headings (as GitHub names them). An absolute http(s) URL must be on a short list
of stable hosts, or name the repository that is not published yet in a paragraph that says so. Nothing
here touches the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[3]
CATALOG = REPO / "RSORegistration.json"
MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Files whose URLs are checked too: the module's help text, the CMake metadata, docs/' other text files.
# The catalog entry (JSON, no comments) has a test of its own.
OTHER_FILES = [
    REPO / "RSORegistration" / "RSORegistration.py",
    REPO / "CMakeLists.txt",
    *sorted(p for p in (REPO / "docs").glob("*") if p.suffix in (".json", ".txt", ".yaml", ".yml")),
]

# (host, path prefix): stable places that outlive a release. Loopback addresses are where the user's
# own review server listens.
ALLOWED = (
    ("arxiv.org", "/"),
    ("doi.org", "/"),
    ("slicer.org", "/"),
    ("www.slicer.org", "/"),
    ("slicer.readthedocs.io", "/"),
    ("download.slicer.org", "/"),
    ("discourse.slicer.org", "/"),
    ("github.com", "/Slicer/"),
    ("raw.githubusercontent.com", "/Slicer/"),
    ("docs.monai.io", "/"),
    ("pytorch.org", "/"),
    ("127.0.0.1", "/"),
    ("localhost", "/"),
)
# The repository the extension will be published as. Until it is, a URL naming it must sit in a
# paragraph that says "not published yet", and a path in it must name a file here.
UNPUBLISHED = "rsoregistration/SlicerRSORegistration"
NOT_PUBLISHED_MARK = "not published yet"

URL = re.compile(r"https?://[^\s<>\"'`)\]]+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"(?:href|src)\s*=\s*\"([^\"]+)\"")
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def paragraphs(text: str):
    """(first line number, paragraph text) for each block of lines between blank lines."""
    start, lines = 1, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines)
            lines = []
    if lines:
        yield start, "\n".join(lines)


def repository_path(url: str) -> str | None:
    """The file path a URL into the unpublished repository names ('' for the repository itself)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    name = path.removesuffix(".git")
    if parts.netloc == "github.com" and (name == f"/{UNPUBLISHED}" or name.startswith(f"/{UNPUBLISHED}/")):
        rest = name[len(f"/{UNPUBLISHED}") :]
        match = re.match(r"/(?:blob|tree|raw)/[^/]+/(.+)", rest)
        return match.group(1) if match else ("" if not rest else rest.lstrip("/"))
    if parts.netloc == "raw.githubusercontent.com" and path.startswith(f"/{UNPUBLISHED}/"):
        return path[len(f"/{UNPUBLISHED}/") :].partition("/")[2]
    return None


def url_problem(url: str, context: str) -> str | None:
    """Why ``url`` is not allowed where it stands (``context``: its paragraph), or None."""
    url = url.rstrip(".,;:")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if any(host == allowed and (parts.path or "/").startswith(prefix) for allowed, prefix in ALLOWED):
        return None
    inside = repository_path(url)
    if inside is None:
        return "not on the list of stable hosts"
    if NOT_PUBLISHED_MARK not in " ".join(context.lower().split()):
        return f"names the unpublished repository without saying '{NOT_PUBLISHED_MARK}'"
    if inside and not (REPO / inside).exists():
        return f"names {inside}, which is not in this repository"
    return None


def relative_targets(path: Path):
    """(line number, target) of every relative link and image in a Markdown file, code left out."""
    text = path.read_text(encoding="utf-8")
    blank = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    blank = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), blank)
    for number, line in enumerate(blank.splitlines(), 1):
        for target in [*LINK.findall(line), *HTML_LINK.findall(line)]:
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("#"):
                yield number, target


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_images_name_files(path):
    dead = []
    for number, target in relative_targets(path):
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if not (path.parent / file_part).exists():
            dead.append(f"{path.relative_to(REPO)}:{number}: {target}")
    assert not dead, "\n".join(dead)


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, links and punctuation dropped, spaces as hyphens, a
    repeated heading numbered (-1, -2, ...)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        words = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
        anchor = re.sub(r"[^\w\- ]", "", words).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_anchors_name_headings(path):
    text = INLINE_CODE.sub(" ", FENCE.sub("", path.read_text(encoding="utf-8")))
    dead = []
    for target in LINK.findall(text):
        file_part, _, anchor = target.partition("#")
        page = path.parent / file_part if file_part else path
        if anchor and page.suffix == ".md" and page.is_file() and anchor not in heading_anchors(page):
            dead.append(f"{path.relative_to(REPO)}: {target}")
    assert not dead, "\n".join(dead)


@pytest.mark.parametrize("path", [*MARKDOWN, *OTHER_FILES], ids=lambda p: str(p.relative_to(REPO)))
def test_absolute_urls_are_stable_or_marked_unpublished(path):
    text = path.read_text(encoding="utf-8")
    problems = []
    for start, paragraph in paragraphs(text):
        for offset, line in enumerate(paragraph.splitlines()):
            for url in URL.findall(line):
                problem = url_problem(url, paragraph)
                if problem:
                    problems.append(f"{path.relative_to(REPO)}:{start + offset}: {url}: {problem}")
    assert not problems, "\n".join(problems)


def test_the_catalog_entry_names_the_repository_the_checklist_marks_unpublished():
    """JSON has no comments, so docs/extensions-index.md says, for the entry, that it is not published yet."""
    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    checklist = (REPO / "docs" / "extensions-index.md").read_text(encoding="utf-8")
    marked = [p for _, p in paragraphs(checklist) if "RSORegistration.json" in p]
    for key, url in entry.items():
        if not isinstance(url, str) or not URL.match(url):
            continue
        if repository_path(url) is not None:
            assert any(url in p and NOT_PUBLISHED_MARK in " ".join(p.lower().split()) for p in marked), key
        else:
            assert url_problem(url, "") is None, (key, url)


def test_the_checker_catches_what_it_should(tmp_path):
    assert url_problem("https://example.com/x", "") == "not on the list of stable hosts"
    assert url_problem("https://arxiv.org/abs/2203.04295", "") is None
    assert url_problem("https://github.com/Slicer/Slicer", "") is None
    assert url_problem("https://github.com/someone/else", "") is not None
    unpublished = f"https://github.com/{UNPUBLISHED}/blob/main/docs/absent.md"
    assert "without saying" in url_problem(unpublished, "the docs")
    assert "not in this repository" in url_problem(unpublished, "Not published\nyet: the docs")
    assert url_problem(f"https://github.com/{UNPUBLISHED}.git", "(not published yet)") is None
    assert url_problem(f"https://github.com/{UNPUBLISHED}X", "(not published yet)") is not None
    page = tmp_path / "page.md"
    page.write_text(
        "[a](absent.md#x) `[b](in-code.md)`\n```\n[c](fenced.md)\n```\n![d](<img.png>) [e](#top)\n"
    )
    assert list(relative_targets(page)) == [(1, "absent.md#x"), (5, "img.png")]
    page.write_text("# ISO's guard (2026-12-03)\n## Use [it](x.md)\n## Use it\n```\n# not a heading\n```\n")
    assert heading_anchors(page) == {"isos-guard-2026-12-03", "use-it", "use-it-1"}
