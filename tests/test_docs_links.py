"""Every relative link of README.md and docs/*.md resolves: the file (or folder) exists in the repository and
a `#anchor` into a markdown file names one of its headings (GitHub's slugs). The README stays a front page.

Links are read outside fenced code blocks and inline code spans: `[text](target)`, `![alt](target)` and
reference definitions `[name]: target`. Absolute URLs (`https:`, `mailto:` ...) are not followed.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1)(?!\n[ \t]*\n).)+?\1", re.S)  # a span ends with its paragraph
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>\n]*>|[^\s()]+(?:\([^\s()]*\)[^\s()]*)*)"
                         r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>\n]*>|\S+)", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose(text: str) -> str:
    """The text without fenced code blocks (their lines become empty, so line numbers stay)."""
    lines, fence = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            lines.append("")
        elif fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return "\n".join(lines)


def without_inline_code(text: str) -> str:
    """Inline code spans blanked out (same length), so `[a](b)` inside backticks is no link."""
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), text)


def links(text: str) -> list[str]:
    """Every link target of a markdown text, in order."""
    text = without_inline_code(prose(text))
    found = [(m.start(), m.group(1)) for m in INLINE_LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REFERENCE.finditer(text)]
    return [target.strip("<>") for _, target in sorted(found)]


def heading_text(raw: str) -> str:
    """What a heading renders as: links become their text; code, emphasis and HTML marks drop."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("`", "").replace("*", "").replace("~~", "")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading (github-slugger): lower case, every character that is not a letter,
    mark, number, connector (`_`), hyphen or space dropped, spaces turned into hyphens."""
    kept = []
    for char in heading_text(heading).lower():
        if char in "- " or unicodedata.category(char)[0] in "LMN" or unicodedata.category(char) == "Pc":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings; repeated slugs get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(page: Path, repo: Path = REPO) -> list[str]:
    """'target: why' for every relative link of `page` that does not resolve inside `repo`."""
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if SCHEME.match(target) or target.startswith("//"):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = path_part.split("?")[0]
        destination = (page.parent / path_part).resolve() if path_part else page
        try:
            destination.relative_to(repo)
        except ValueError:
            broken.append(f"{target}: outside the repository")
            continue
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor.lower() not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.relative_to(repo)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = broken_links(page)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move write-ups to docs/"


# -- the checker itself, on pages with known answers -----------------------------------------------------
def test_slugs_follow_github():
    assert slug("2026-11-30: The paper's DR-FIM and the IVON estimate") == (
        "2026-11-30-the-papers-dr-fim-and-the-ivon-estimate")
    assert slug("Precision: `train.amp`, `eval.amp`") == "precision-trainamp-evalamp"
    assert slug("The quick demo (the first command)") == "the-quick-demo-the-first-command"
    assert slug("4. Variational stabilisation: the posterior precision Λ") == (
        "4-variational-stabilisation-the-posterior-precision-λ")
    assert slug("Selection × seeds → results") == "selection--seeds--results"


def test_a_broken_file_or_anchor_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A section\n\n## A section\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n## Here\n\n"
        "[ok](other.md) [ok](other.md#a-section) [ok](other.md#a-section-1) [ok](#here) [ok](../docs)\n"
        "[web](https://example.org/x.md) `[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) ![img](pic.png)\n"
        "[two\nlines](other.md#b) [up](../../x.md)\n[ref]: gone.md\n")
    assert broken_links(page, tmp_path) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading with anchor #nowhere in docs/other.md",
        "pic.png: no such file",
        "other.md#b: no heading with anchor #b in docs/other.md",
        "../../x.md: outside the repository",
        "gone.md: no such file",
    ]
