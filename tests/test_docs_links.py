"""Every relative link in the README, docs/ and reports/*/README.md resolves inside the repository:
the file exists and, for `#anchor`, the heading does (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Links to pages another change is writing, skipped until then (delete an entry once its target exists):
PENDING: set[tuple[str, str]] = set()
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(REPO.glob("reports/*/README.md"))]


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def links(path: Path) -> list[str]:
    out: list[str] = []
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            out += [a or b for a, b in LINK.findall(re.sub(r"`[^`]*`", "", line))]
    return out


def test_the_slugs_are_githubs() -> None:
    assert slug("The model type `alignez-hf`") == "the-model-type-alignez-hf"
    assert slug("compare, sweeps and data-parallel") == "compare-sweeps-and-data-parallel"


def test_every_relative_link_resolves_inside_the_repository() -> None:
    bad: list[str] = []
    checked = 0
    for page in pages():
        for url in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", url):  # https:, mailto: …
                continue
            checked += 1
            if (page.relative_to(REPO).as_posix(), url) in PENDING:
                continue
            target, _, anchor = url.partition("#")
            dest = (page.parent / target).resolve() if target else page
            where = f"{page.relative_to(REPO)} -> {url}"
            if not dest.is_relative_to(REPO):
                bad.append(f"{where}: points outside the repository")
            elif not dest.exists():
                bad.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{where}: no heading #{anchor}")
    assert checked > 20  # the pages were read
    assert not bad, "\n".join(bad)


def test_no_page_sends_the_reader_outside_the_repository() -> None:
    for page in pages():
        text = page.read_text(encoding="utf-8")
        assert "findings.md" not in text and "/work/shared" not in text and "../shared" not in text, page


def test_the_readme_is_a_front_door() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^make \w+", setup, flags=re.M) == ["make demo", "make test"]
    for page in ("alignez-hf", "fitting", "tasks", "judging-and-validation", "compare-sweeps-data-parallel",
                 "embedded-models", "benchmarks", "architecture-and-extending"):
        assert f"(docs/{page}.md)" in text, page

