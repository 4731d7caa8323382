"""Find the runnable code blocks of README.md and docs/*.md, with their test directives.

A block is a fenced ```python or ```bash block. An HTML comment on the line(s) just before its
fence tells the docs test how to run it (the rendered page does not show it; a block that is
not run says so in visible text next to it as well)::

    <!-- docs-test: fixtures=tensors,image_files weights=vgg16 -->
    <!-- docs-test: skip reason="downloads from the package registry" -->
    <!-- docs-test: sub="--steps 5000=>--steps 2" -->

- ``fixtures``: stand-ins the block uses (see ``docs_fixtures.py``): variables for Python
  blocks, files in the working folder for both kinds;
- ``weights``: registry keys or backbone names whose official files are replaced by
  random-weight stand-ins for this block (``vgg16`` means ``vgg16/imagenet``);
- ``sub``: text replaced before the block runs, to shrink a long run (``old=>new``; the
  old text must occur, so a changed example fails instead of running unshrunk);
- ``skip``: not run here; ``reason`` says why (a GPU, the network).

Blocks in other fences (```text, ```json) are output listings, never run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_DIRECTIVE = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->", re.DOTALL)


@dataclass
class DocBlock:
    """One runnable block: where it is, what it says, how to run it."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str  # "python" or "bash"
    code: str
    fixtures: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    subs: tuple[tuple[str, str], ...] = ()
    skip: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    def runnable_code(self) -> str:
        """The code with its ``sub`` replacements made (each must match)."""
        code = self.code
        for old, new in self.subs:
            if old not in code:
                raise AssertionError(f"{self.id}: sub {old!r} does not occur in the block; "
                                     "update the docs-test comment with the example")
            code = code.replace(old, new)
        return code


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every docs/*.md (new files are picked up by themselves)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse_directive(body: str, where: str) -> dict[str, list[str]]:
    """``key=value`` words of a docs-test comment (values may be quoted), ``skip`` alone."""
    found: dict[str, list[str]] = {}
    for word in shlex.split(body):
        key, _, value = word.partition("=")
        if key not in {"fixtures", "weights", "sub", "skip", "reason", "timeout"}:
            raise ValueError(f"{where}: unknown docs-test key {key!r}")
        found.setdefault(key, []).append(value)
    return found


def collect_blocks(path: Path) -> list[DocBlock]:
    """The runnable blocks of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[DocBlock] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        fence, language = match["fence"], match["info"].lower()
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].lstrip().startswith(fence):
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        if language not in RUNNABLE:
            continue
        block = DocBlock(path, start + 1, RUNNABLE[language], "\n".join(body) + "\n")
        _apply_directives(block, _comment_before(lines, start))
        blocks.append(block)
    return blocks


def _comment_before(lines: list[str], fence_index: int) -> str:
    """The one-line ``<!-- docs-test: ... -->`` comments directly above a fence."""
    text: list[str] = []
    index = fence_index - 1
    while index >= 0 and lines[index].strip().startswith("<!-- docs-test:"):
        text.insert(0, lines[index])
        index -= 1
    return "\n".join(text)


def visible_note_near(path: Path, line: int, span: int = 4) -> bool:
    """Whether "Not run in the test suite" is written within ``span`` lines of a block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    end = line
    while end < len(lines) and not _FENCE.match(lines[end]):
        end += 1
    window = lines[max(0, line - 1 - span):line] + lines[end:end + 1 + span]
    return any("Not run in the test suite" in text for text in window)


def _apply_directives(block: DocBlock, comment: str) -> None:
    for match in _DIRECTIVE.finditer(comment):
        found = parse_directive(match["body"], block.id)
        for value in found.get("fixtures", []):
            block.fixtures += tuple(name for name in value.split(",") if name)
        for value in found.get("weights", []):
            block.weights += tuple(name for name in value.split(",") if name)
        for value in found.get("sub", []):
            old, arrow, new = value.partition("=>")
            if not arrow:
                raise ValueError(f"{block.id}: sub needs old=>new, got {value!r}")
            block.subs += ((old, new),)
        if "skip" in found:
            block.skip = (found.get("reason") or ["(no reason given)"])[0]
        if "timeout" in found:
            block.options["timeout"] = found["timeout"][0]
