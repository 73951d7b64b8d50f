"""The docs match the code: every ``campaign`` command README.md and docs/*.md show parses with
the real command line (its options and arguments exist), every sub-command they name answers
``--help``, ``campaign plan`` examples run, every ``python -m MODULE`` they show can be found, and
every dotted Python name of ours they show (``analysis.load.load_runs``) imports."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from campaign.cli import build_parser, parse

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
OURS = ("analysis", "campaign", "db", "jobs", "benchmarks")
DOTTED = re.compile(rf"^(?:{'|'.join(OURS)})(?:\.\w+)+(?=\(|$)")
# What placeholders stand for when an example is parsed.
PLACEHOLDERS = {"NAME": "demo", "DIR": "/tmp/somewhere", "URL": "sqlite:////tmp/x.db", "SQL": "SELECT 1",
                "N": "3", "SECONDS": "5"}


FILES = re.compile(r"\.(json|md|py|yaml|csv|html|png|db|log)$")
COMMAND = re.compile(r"^campaign [a-z][a-z-]*(\s|$)")


def _text(page: Path) -> str:
    """A page, less its record of names that no longer exist (architecture.md's "What moved where")."""
    text = page.read_text()
    return re.sub(r"\n## What moved where.*?(?=\n## |\Z)", "\n", text, flags=re.S)


def _block_commands() -> list[tuple[str, str]]:
    """(page, command line) of each ``campaign ...`` line in the pages' shell blocks."""
    out = []
    for page in PAGES:
        for lang, body in FENCE.findall(_text(page)):
            if lang not in ("", "bash", "sh", "shell", "console"):
                continue
            for line in body.splitlines():
                for part in line.split("&&"):
                    part = part.strip().removeprefix(".venv/bin/")
                    if COMMAND.match(part):
                        out.append((page.name, part))
    return out


def _inline_spans() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        prose = FENCE.sub("", _text(page))
        out += [(page.name, span.strip()) for span in INLINE.findall(prose)]
    return out


def _example_args(line: str) -> list[str]:
    """An example's arguments with its comment, optional ``[...]`` parts and placeholders resolved:
    ``a|b`` takes ``a``; ``...`` (more overrides) is dropped."""
    code = re.sub(r"\s+#.*$", "", line)
    code = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1) if "=" in m.group(1) or "--" in m.group(1) else "", code)
    args = []
    for word in shlex.split(code)[1:]:
        if word in ("...", "[overrides]") or word.endswith("=..."):
            continue
        word = word.split("|")[0] if "|" in word and " " not in word else word
        args.append(PLACEHOLDERS.get(word, word))
    return args


BLOCKS = _block_commands()
SUBCOMMANDS = {span.split()[1] for _, span in _inline_spans() if COMMAND.match(span)}


def test_the_pages_show_commands() -> None:
    assert len(BLOCKS) >= 10 and "resume" in SUBCOMMANDS  # the parsers below would otherwise test nothing


@pytest.mark.parametrize(("page", "line"), BLOCKS, ids=[f"{p}:{line[:60]}" for p, line in BLOCKS])
def test_every_example_command_parses(page: str, line: str) -> None:
    args = _example_args(line)
    try:
        parsed = parse(args)
    except SystemExit as exc:  # argparse refused it: the docs show an option or argument that does not exist
        pytest.fail(f"{page}: `{line}` does not parse (exit {exc.code}): {args}")
    assert parsed.fn is not None


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS | {line.split()[1] for _, line in BLOCKS}))
def test_every_command_named_answers_help(command: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "campaign.cli", command, "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: campaign" in proc.stdout


@pytest.mark.parametrize("line", [line for _, line in BLOCKS if line.split()[1] == "plan"])
def test_plan_examples_run(line: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "campaign.cli", *_example_args(line), f"root={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "trials" in proc.stdout and not list(tmp_path.iterdir())  # a plan records nothing


def _python_modules() -> list[str]:
    found = set()
    for page in PAGES:
        found |= set(re.findall(r"python3? -m ([\w.]+)", _text(page)))
    return sorted(m for m in found if m.split(".")[0] in OURS and m.lower() == m)  # benchmarks.NAME: a placeholder


@pytest.mark.parametrize("module", _python_modules())
def test_python_m_modules_exist(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"`python -m {module}` is shown but does not exist"


def _dotted_names() -> list[str]:
    names = set()
    for _, span in _inline_spans():
        m = DOTTED.match(span.strip())
        if m and "/" not in span and not FILES.search(m.group(0)):
            names.add(m.group(0))
    for page in PAGES:
        for lang, body in FENCE.findall(_text(page)):
            if lang == "python":
                names |= {f"{mod}.{name.strip()}" for mod, names_ in re.findall(r"from ([\w.]+) import ([\w, ]+)", body)
                          for name in names_.split(",") if mod.split(".")[0] in OURS}
    return sorted(names)


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def _config_key(dotted: str) -> bool:
    """Whether ``dotted`` is a configuration key (``analysis.batch_size``): a path through the
    composed default configuration."""
    from campaign.config import compose

    node: object = compose([]).to_dict()
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("dotted", _dotted_names())
def test_python_names_shown_import(dotted: str) -> None:
    """A dotted name the docs show imports, or is a configuration key (``analysis.window``)."""
    try:
        _resolve(dotted)
    except (ImportError, AttributeError) as exc:
        if not _config_key(dotted):
            pytest.fail(f"the docs show `{dotted}`, which neither imports nor is a configuration key: {exc}")


def test_the_parser_lists_every_command_the_readme_shows() -> None:
    commands = {name for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
                for name in action.choices}
    shown = {line.split()[1] for _, line in BLOCKS}
    assert shown <= commands
