"""Citations of the docs: every one names a file in docs/ and a heading that exists there.

The project cites its docs in one form, ``docs/<file>.md`` or
``docs/<file>.md#<anchor>``, where the anchor is the heading's GitHub anchor
(lower case, spaces to ``-``, punctuation removed, ``-1``, ``-2``, ... on repeated
headings). Inside docs/ itself, markdown links are relative (``[x](protocols.md#keep-rules)``)
so that they work on GitHub; they are checked the same way. The rules for
contributors are in docs/quality.md#documentation-and-citations.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Names that were cited in the past without being part of the project, plus every
# file in docs/: none of them may be cited without the docs/ prefix.
_FORMER_NAMES = ("architecture", "datasets", "synthetic", "quality", "methods", "protocols")

_CITATION = re.compile(r"docs/([A-Za-z0-9_./-]+?\.md)(?:#([A-Za-z0-9_-]*))?")
_QUOTED_FORM = re.compile(r"docs/[A-Za-z0-9_./-]+\.md,?\s*(?:sections?\s*)?[\"'“]")
_SECTION_NUMBER = re.compile(r"\.md\b[^\n]{0,24}?(?:\bsections?\s*\d|§\s*\d)|§\s*\d")
_RELATIVE_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s]+?\.md)(?:#([^)\s]*))?\)")
_WHOLE_LINK = re.compile(r"\[[^\]]*\]\([^)\s]*\)")
_SAME_FILE_LINK = re.compile(r"\]\(#([^)\s]*)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _bare_name_pattern() -> re.Pattern:
    names = sorted(set(_FORMER_NAMES) | {p.stem for p in DOCS.glob("*.md")})
    alternatives = "|".join(re.escape(n) for n in names)
    # a docs file name not preceded by a path separator or a word character
    return re.compile(rf"(?<![\w/.-])({alternatives})\.md\b")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # drop punctuation, keep letters, digits, _ and -
    return text.replace(" ", "-")


@cache
def anchors_of(path: Path) -> frozenset[str]:
    """Every anchor of a markdown file: its headings outside code fences, de-duplicated."""
    seen: dict[str, int] = {}
    anchors = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if not match:
            continue
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return frozenset(anchors)


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder, patterns in (("src", ("*.py", "*.yaml")), ("tests", ("*.py",)),
                             ("benchmarks", ("*.py",)), ("configs", ("*.yaml", "*.yml")),
                             ("docs", ("*.md",))):
        for pattern in patterns:
            files += sorted((ROOT / folder).rglob(pattern))
    # this file is left out: its own test writes bad citations on purpose
    return [f for f in files if f.is_file() and ".egg-info" not in f.as_posix()
            and f.resolve() != Path(__file__).resolve()]


def _lines(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        yield f"{path.relative_to(ROOT)}:{number}", line


def _check_target(where: str, file: Path, anchor: str | None, shown: str) -> list[str]:
    if not file.is_file():
        return [f"{where}: {shown}: no such file {file.relative_to(ROOT)}"]
    if anchor is not None and anchor not in anchors_of(file):
        return [f"{where}: {shown}: {file.relative_to(ROOT)} has no heading with anchor "
                f"#{anchor} (anchors: {', '.join(sorted(anchors_of(file)))})"]
    return []


def citation_problems(files: list[Path]) -> list[str]:
    """Every broken, mis-formed or bare docs citation in ``files``."""
    bare = _bare_name_pattern()
    problems = []
    for path in files:
        in_docs = path.parent == DOCS
        lines = list(_lines(path))
        for number, (where, line) in enumerate(lines):
            following = lines[number + 1][1].lstrip(" #*/") if number + 1 < len(lines) else ""
            for match in _CITATION.finditer(line):
                problems += _check_target(where, ROOT / "docs" / match.group(1), match.group(2),
                                          match.group(0))
            quoted = _QUOTED_FORM.search(f"{line} {following}")  # also across a line break
            if quoted and quoted.start() < len(line):
                problems.append(f"{where}: cite a section as docs/<file>.md#<anchor>, "
                                f"not with a quoted heading: {line.strip()}")
            if _SECTION_NUMBER.search(line):
                problems.append(f"{where}: a numbered section of a docs file (the docs have "
                                f"none; cite docs/<file>.md#<anchor>): {line.strip()}")
            if in_docs:
                for match in _RELATIVE_LINK.finditer(line):
                    target = (path.parent / match.group(1)).resolve()
                    problems += _check_target(where, target, match.group(2), match.group(0))
                for match in _SAME_FILE_LINK.finditer(line):
                    problems += _check_target(where, path, match.group(1), match.group(0))
                line = _WHOLE_LINK.sub("", line)  # links are checked above; their names are fine
            for match in bare.finditer(line):
                problems.append(f"{where}: {match.group(0)} without the docs/ prefix "
                                f"(cite docs/{match.group(0)} or docs/{match.group(0)}#<anchor>)")
    return problems


def test_every_docs_citation_names_an_existing_file_and_heading():
    problems = citation_problems(scanned_files())
    assert not problems, f"{len(problems)} bad docs citation(s):\n" + "\n".join(problems)


def test_the_docs_tree_is_complete():
    for name in ("architecture", "datasets", "synthetic", "quality", "methods", "protocols"):
        assert (DOCS / f"{name}.md").is_file(), name


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Metrics [V]", "metrics-v"),
        ("CSDN (`csdn`)", "csdn-csdn"),
        ("The demo (`vireid demo`, `make demo`)", "the-demo-vireid-demo-make-demo"),
        ("CLIP-ReID: deviations and assumptions", "clip-reid-deviations-and-assumptions"),
        ("Frame sampling for tracklets", "frame-sampling-for-tracklets"),
        ("HITSZ-VCM", "hitsz-vcm"),
        ("What imports what", "what-imports-what"),
    ],
)
def test_github_anchor(heading, anchor):
    assert github_anchor(heading) == anchor


def test_the_checker_finds_each_kind_of_bad_citation(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\n## Same\n\n## Same\n\n```\n# not a heading\n```\n"
                               "[ok](a.md#same-1) [bad](a.md#nope) [ok](#a) [missing](b.md)\n",
                               encoding="utf-8")
    src = tmp_path / "src.py"
    src.write_text(
        '"""docs/a.md#same docs/a.md#same-1 docs/a.md docs/a.md#same-2 docs/b.md#x\n'
        'docs/a.md, "Same"  (a.md)  docs/a.md section 2  methods.md  datasets.md\n"""\n',
        encoding="utf-8",
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "DOCS", docs)
    anchors_of.cache_clear()
    try:
        problems = citation_problems([docs / "a.md", src])
        assert anchors_of(docs / "a.md") == {"a", "same", "same-1"}
    finally:
        anchors_of.cache_clear()
    assert len(problems) == 9, "\n".join(problems)
    text = "\n".join(problems)
    assert "#nope" in text and "](b.md): no such file" in text  # relative links in docs/
    assert "docs/a.md#same-2" in text and "docs/b.md#x: no such file" in text
    assert "quoted heading" in text and "numbered section" in text
    assert text.count("without the docs/ prefix") == 3  # a.md, methods.md and datasets.md
