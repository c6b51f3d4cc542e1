"""The project stands alone, and its front door stays a front door.

* No source or documentation file outside ``docs/`` (``.py``, ``.md``, ``.toml``, ``.html``,
  ``.j2``; tracked, or new and not ignored) cites the private design notes the repository does
  not contain: the upper-case design document, or a ``research/<name>.md`` note. Code cites
  ``docs/`` pages or papers instead.
* ``README.md`` is at most 12,288 bytes, has the "Quick start" heading, and keeps the
  test-command markers around exactly one command line (``.ci/run`` runs that line verbatim).
* Every relative link in ``README.md``, ``CONTRIBUTING.md`` and ``docs/*.md`` points to a file
  that exists, and a ``#fragment`` into a Markdown file names one of its headings.

The checks are plain functions; the last tests feed them broken input, so each one can fail.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_BYTES = 12_288
CITED_SUFFIXES = (".py", ".md", ".toml", ".html", ".j2")
#: The notes' names, assembled so that this file does not cite them itself.
NOTES = re.compile(r"\b" + "DES" + r"IGN(?:\.md)?\b|\b" + "research" + r"/[A-Za-z_-]+\.md")
OPEN_MARKER, CLOSE_MARKER = "<!-- test-command -->", "<!-- /test-command -->"
SKIPPED_DIRS = {".git", ".venv", "site", ".asv", ".tox", "build", "dist", "__pycache__", "node_modules"}

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"""<[^>]+\s(?:id|name)=["']([^"']+)["']""")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def project_files() -> list[str]:
    """Repository-relative paths of the tracked files and the new files git does not ignore."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        found = []
        for base, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
            found += [str((Path(base) / f).relative_to(ROOT)) for f in files]
        return sorted(found)
    return sorted({p for p in out.decode().split("\0") if p and (ROOT / p).is_file()})


def note_citations(text: str) -> list[str]:
    """``line: text`` of every line that cites the design notes."""
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if NOTES.search(line)]


def ci_command_lines(readme: str) -> list[str]:
    """The lines ``.ci/run`` would run: between the markers, without comments and fences."""
    if readme.count(OPEN_MARKER) != 1 or readme.count(CLOSE_MARKER) != 1:
        return []
    start, stop = readme.index(OPEN_MARKER), readme.index(CLOSE_MARKER)
    if stop < start:
        return []
    block = readme[start:stop].splitlines()[1:]
    return [line for line in block if "<!--" not in line and not line.startswith("```") and line.strip()]


def _prose_lines(text: str) -> list[str]:
    """The Markdown's lines outside fenced code blocks, inline code removed."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        out.append("" if fenced else _INLINE_CODE.sub("", line))
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every fragment a Markdown file defines: heading slugs (numbered when repeated), HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(_HTML_ID.findall(line))
        m = _HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` to files that do not exist, or to headings that do not."""
    problems = []
    text = path.read_text(encoding="utf-8")
    for line in _prose_lines(text):
        targets = _LINK.findall(line)
        ref = _REFERENCE.match(line)
        if ref:
            targets.append(ref.group(1))
        for target in targets:
            if _SCHEME.match(target) or target.startswith("//"):
                continue  # an absolute URL (https:, mailto: ...): not a file of this repository
            file_part, _, fragment = target.partition("#")
            dest = (path.parent / unquote(file_part)).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{path.name}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and unquote(fragment) not in anchors(dest.read_text("utf-8")):
                problems.append(f"{path.name}: {target} (no such heading)")
    return problems


def linked_documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- the repository


def test_no_file_outside_docs_cites_the_design_notes() -> None:
    files = [p for p in project_files() if p.endswith(CITED_SUFFIXES) and not p.startswith("docs/")]
    assert len(files) > 100, "the file listing found too few files to be the repository"
    cited = [f"{p}:{hit}" for p in files for hit in note_citations((ROOT / p).read_text(encoding="utf-8"))]
    assert not cited, "cite docs/ pages or papers instead of the design notes:\n" + "\n".join(cited)


def test_readme_is_a_front_door() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES}): move detail to docs/"


def test_readme_has_the_quick_start_and_the_test_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert re.search(r"^#{1,6}\s+Quick start\s*$", text, re.MULTILINE), "README.md lost its Quick start heading"
    lines = ci_command_lines(text)
    assert len(lines) == 1, f"expected one command between {OPEN_MARKER} and {CLOSE_MARKER}, found {lines}"
    assert lines[0].startswith("python3 -m venv .venv && "), lines[0]


def test_every_relative_link_resolves() -> None:
    documents = linked_documents()
    assert len(documents) >= 12, [d.name for d in documents]
    problems = [p for doc in documents for p in broken_links(doc)]
    assert not problems, "broken links:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the checks can fail


def test_the_citation_check_flags_the_notes_and_nothing_else() -> None:
    text = "\n".join(
        [
            "see DES" + "IGN.md, 'Storage'",
            "(DES" + "IGN, 'Where the speed is')",
            "as research" + "/ief.md 1.7 derives",
            "AlgoPerf's docs/DOCUMENTATION.md, 'Scoring'",
            "the design of docs/architecture.md; research papers",
        ]
    )
    assert [hit.split(":")[0] for hit in note_citations(text)] == ["1", "2", "3"]


def test_the_test_command_extraction_matches_ci() -> None:
    fence = "`" * 3
    good = f"x\n{OPEN_MARKER}\n{fence}bash\necho hi\n{fence}\n{CLOSE_MARKER}\n"
    assert ci_command_lines(good) == ["echo hi"]
    assert ci_command_lines(good.replace(OPEN_MARKER, "")) == []
    assert ci_command_lines(good.replace("echo hi", "")) == []


def test_slugs_follow_github() -> None:
    assert github_slug("2. Check it") == "2-check-it"
    assert github_slug("kfac-jax 0.0.8 and jax >= 0.9.2") == "kfac-jax-008-and-jax--092"
    assert github_slug("`ngbench approx`") == "ngbench-approx"
    assert github_slug("See [the site](site.md)") == "see-the-site"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_the_link_check_finds_missing_files_and_headings(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Title\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n"
        "[ok](other.md) [ok](other.md#a-section) [ok](#page) [web](https://example.org/x.md)\n"
        "`[code](missing.md)` and\n```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) [bad](other.md#no-section) [self](#nowhere)\n"
        "[ref]: also-missing.md\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#no-section (no such heading)",
        "page.md: #nowhere (no such heading)",
        "page.md: also-missing.md (no such file)",
    ]
