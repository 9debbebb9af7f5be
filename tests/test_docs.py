"""Every command the README and docs/ show still runs as written: the CLI accepts its options, its
`--set` keys exist and take their values, and the networks it names can be built."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import torch

from sharenet.cli import build_parser
from sharenet.engine.config import KEYS, coerce, parse_set
from sharenet.models import create_model

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _fenced(text: str) -> list[str]:
    """The contents of the page's shell code blocks (```bash, ```sh, or unlabelled)."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in ("", "bash", "sh", "console"):
                    blocks.append("\n".join(lines))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def _placeholder(words: list[str]) -> bool:
    """A mention rather than an example: `sharenet study`, `sharenet params NAME --share S`."""
    return len(words) < 3 or any(re.fullmatch(r"[A-Z][A-Z_]*|.*[\[|\]].*", w) for w in words)


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for each `sharenet ...` (or `torchrun ... -m sharenet ...`) a page shows:
    every one in its shell code blocks, and the inline ones that are complete examples."""
    found = []
    for page in PAGES:
        text = page.read_text()
        chunks = [(c, False) for c in _fenced(text)]
        chunks += [(c, True) for c in re.findall(r"`((?:[A-Z_]+=\S+ )*(?:sharenet|torchrun) [^`\n]+)`", text)]
        for chunk, inline in chunks:
            for line in chunk.replace("\\\n", " ").splitlines():
                for part in line.strip().removeprefix("$ ").split("&&"):
                    if not re.match(r"\s*([A-Z_]+=\S*\s+)*(sharenet|torchrun)\s", part):
                        continue  # output, Python, YAML: not a command line
                    words = shlex.split(part, comments=True)
                    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # environment settings
                        words.pop(0)
                    if words[:1] == ["torchrun"] and "sharenet" in words:
                        words = words[words.index("sharenet") :]
                    if words[:1] == ["sharenet"] and "..." not in words and not (inline and _placeholder(words)):
                        found.append((page.relative_to(ROOT).as_posix(), shlex.join(words)))
    return found


COMMANDS = documented_commands()


def test_the_pages_show_commands_of_every_kind():
    kinds = {shlex.split(cmd)[1] for _, cmd in COMMANDS}
    assert {"train", "eval", "params", "export", "predict", "bench", "study", "report", "import"} <= kinds
    assert {page for page, _ in COMMANDS} >= {"README.md", "docs/models.md", "docs/training.md", "docs/deploy.md",
                                              "docs/speed.md"}  # fmt: skip


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}: {c}" for p, c in COMMANDS])
def test_documented_command_is_accepted(page, command):
    argv = shlex.split(command)[1:]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page}: `{command}` is refused: {err.getvalue().strip().splitlines()[-1]}")
    for dotted, value in parse_set(getattr(args, "set", None) or []).items():
        assert dotted in KEYS, f"{page}: `{command}` sets an unknown key {dotted}"
        coerce(dotted, value)
    name = getattr(args, "name", None) if args.command == "params" else getattr(args, "model", None)
    if args.command in ("params", "train", "bench", "import") and isinstance(name, str):
        with torch.device("meta"):
            create_model(name)


def test_the_readme_quotes_the_headline_study_as_its_report_says_it():
    """The README's claims section quotes docs/budget-study.md's tables: every table row and answer
    there is a line of the report, so regenerating the report from new records shows a stale quote."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Reproducing the papers", 1)[1].split("\n## ", 1)[0]
    report = set((ROOT / "docs" / "budget-study.md").read_text().splitlines())
    quoted = [line for line in section.splitlines() if line.startswith("| ") or line.startswith("- resnet")]
    assert sum(line.startswith("|---") for line in section.splitlines()) >= 3  # claims, equal budget, frontier
    assert [line for line in quoted if line not in report] == []
    assert "](docs/budget-study.md)" in section and "](docs/study-3-epochs.md)" in section


def test_the_readme_quotes_the_compression_page_as_it_is():
    """The README's compression section quotes docs/compress.md's table rows verbatim."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Compressing a network you trained", 1)[1].split("\n## ", 1)[0]
    page = set((ROOT / "docs" / "compress.md").read_text().splitlines())
    quoted = [line for line in section.splitlines() if line.startswith("|")]
    assert len(quoted) >= 4 and [line for line in quoted if line not in page] == []
    assert "](docs/compress.md)" in section


def test_the_layout_block_names_every_module():
    """The README's layout names every module of the package, so a reader finds each one there."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Layout") :]
    block = block[: block.index("```", block.index("```") + 3)]
    modules = {p.stem for p in (ROOT / "src" / "sharenet").rglob("*.py") if not p.stem.startswith("__")}
    missing = sorted(m for m in modules if not re.search(rf"\b{m}\b", block))
    assert not missing, f"README's layout block misses {missing}"


def test_pages_speak_of_the_project_not_of_its_issues_or_sessions():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [f"{p.name}: {line.strip()[:80]}" for p in pages for line in p.read_text().splitlines()
             if re.search(r"issue #|session", line, re.IGNORECASE)]  # fmt: skip
    assert not found, found
