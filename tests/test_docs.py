"""The docs show what exists: every file or folder named in the file trees of README.md and
docs/design.md, and every relative link in README.md and docs/, is in the repository."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _tree_paths(text: str) -> list[str]:
    """Paths a file tree names: indented lines' first word ending in '/' or a known suffix,
    joined to the folders above them by indentation."""
    found, stack = [], []
    for line in text.splitlines():
        # An entry: a name, then two spaces and its description, or nothing (a description's
        # continuation lines have single spaces between words).
        m = re.match(r"^( {4,})([\w./-]+?(?:/|\.(?:py|h|cuh|cu|cpp|md|sh|json|yaml)))(?:,|  |$)", line)
        if not m:
            continue
        depth = len(m.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        name = m.group(2)
        parent = stack[-1][1] if stack else ""
        path = name if "/" in name.rstrip("/") or not parent else parent + name
        found.append(path)
        if name.endswith("/"):
            stack.append((depth, path))
    return found


def _blocks(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(heading)
    nxt = re.search(r"^#{1,3} ", text[start + len(heading):], re.M)
    return text[start: start + len(heading) + (nxt.start() if nxt else len(text))]


@pytest.mark.parametrize("doc, heading", [("README.md", "## Layout"),
                                          ("docs/design.md", "## 4. How the code is put together")])
def test_file_trees_name_what_exists(doc, heading):
    paths = _tree_paths(_blocks(ROOT / doc, heading))
    assert len(paths) > 5
    missing = [p for p in paths if not (ROOT / p).exists() and not (ROOT / "ost_kernels" / p).exists()]
    assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
    missing = [link for link in links if "://" not in link and not (doc.parent / link).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"
