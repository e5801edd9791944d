"""The documentation: a short README, and an MkDocs site under docs/ whose pages, links and named paths exist.

Fast and offline: it reads the Markdown and mkdocs.yml as text (no mkdocs import), so it runs without mkdocs
installed. `mkdocs build --strict` checks the rendering itself.
"""

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"

MAX_README_LINES = 250

# An inline-code span is taken for a repository path when it is one token that starts with one of these (the
# repository's top-level folders and files) and contains a `/` or ends in one of PATH_SUFFIXES, or is one of the
# top-level files itself.
TOP_LEVEL = ("infra/", "jobs/", "tests/", "policies/", "workloads/", "benchmarks/", "docs/", "ml-registry/",
             ".github/", ".ci/", "Pulumi.", "Makefile", "pyproject.toml", "uv.lock", "__main__.py", "mkdocs.yml")  # fmt: skip
TOP_LEVEL_FILES = {"Makefile", "pyproject.toml", "uv.lock", "__main__.py", "mkdocs.yml"}
PATH_SUFFIXES = (".py", ".yml", ".yaml", ".md", ".toml")
PLACEHOLDERS = ("<", "*", "{")  # `workloads/<name>/`, `workloads/*/automl-*.yml`, `{yyyy}`: patterns, not paths

# Paths the docs already name that are being added to the repository in work under way (the move of the install to
# uv and a lock). Remove each one from here once it exists.
COMING: set[str] = set()

# Files the docs name as examples of what the reader creates, never files of this repository.
EXAMPLES = {
    "Pulumi.staging.yaml",  # platform-engineers.md: "To add a stack (say `staging`), copy a stack file to ..."
}

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def prose(text: str) -> str:
    """The Markdown without its fenced code blocks (their contents are commands and files, not prose)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return "\n".join(lines)


def named_paths(text: str) -> set[str]:
    """Every inline-code span of the prose that names a repository path."""
    paths = set()
    for span in INLINE_CODE.findall(prose(text)):
        span = span.strip()
        if not span or any(c.isspace() for c in span) or not span.startswith(TOP_LEVEL):
            continue
        path = span.split("::")[0]  # a pytest node ID names its file
        path = re.sub(r":\d+$", "", path)  # a line number
        if not ("/" in path or path.endswith(PATH_SUFFIXES) or path in TOP_LEVEL_FILES):
            continue
        if any(p in path for p in PLACEHOLDERS):
            continue
        paths.add(path)
    return paths


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (MkDocs' default) of a heading's text."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*_]{1,2}([^*_]+)[*_]{1,2}", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}_{count}")
    return found


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    return []


class _Loader(yaml.SafeLoader):
    """mkdocs.yml's `!!python/name:` tags (the mermaid fence) read as plain strings."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: suffix)


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; at most {MAX_README_LINES}: move detail into docs/"


@pytest.mark.parametrize("doc", [README, *pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_docs_name_exists(doc):
    missing = sorted(p for p in named_paths(doc.read_text())
                     if not (ROOT / p).exists() and p not in COMING and p not in EXAMPLES)  # fmt: skip
    assert missing == [], f"{doc.relative_to(ROOT)} names paths that do not exist"


def test_the_readme_links_every_docs_page_and_only_pages_that_exist():
    links = {target.split("#")[0] for target in LINK.findall(README.read_text()) if target.startswith("docs/")}
    assert sorted(link for link in links if link.endswith(".md") and not (ROOT / link).is_file()) == []
    assert sorted(str(p.relative_to(ROOT)) for p in pages() if str(p.relative_to(ROOT)) not in links) == []


def test_the_nav_lists_every_page_and_only_pages_that_exist():
    config = yaml.load(MKDOCS.read_text(), Loader=_Loader)
    assert config["theme"]["name"] == "material"
    listed = nav_pages(config["nav"])
    on_disk = [str(p.relative_to(DOCS)) for p in pages()]
    assert sorted(set(on_disk) - set(listed)) == [], "pages under docs/ missing from mkdocs.yml's nav"
    assert sorted(set(listed) - set(on_disk)) == [], "nav entries with no page under docs/"
    assert len(listed) == len(set(listed)), "a page listed twice in the nav"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_pages_reach_a_page_and_its_heading(page):
    """What `mkdocs build --strict` refuses, checked without mkdocs: a relative link must reach a page under docs/
    (a repository file outside it is written as inline code, not linked) and, with a #, one of its headings."""
    bad = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if path and (DOCS not in linked.parents or not linked.exists()):
            bad.append(f"{target}: not a file under docs/")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            bad.append(f"{target}: no such heading")
    assert bad == []
