"""Every ``galmoco COMMAND ... --option`` written in the README and docs/ names an option the command has.

The walkthrough (tests/test_readme.py) and the demo run their commands; the other examples in the
pages are parsed here, so a renamed or removed option cannot live on in the documentation.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from galmoco.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "docs" / "slurm_example.sbatch"]
#: "galmoco train ...", "-m galmoco train ...", up to the end of the line, a backtick, a pipe or a comment
COMMAND_LINE = re.compile(rf"galmoco\s+(?:-v\s+)?({'|'.join(COMMANDS)})\b([^`\n|#]*)")


def _options(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


def _examples() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for match in COMMAND_LINE.finditer(page.read_text()):
            found.append((page.name, match[1], match[2]))
    return found


def test_the_pages_have_examples_of_every_command():
    assert {name for _, name, _ in _examples()} == set(COMMANDS)


@pytest.mark.parametrize("page, name, rest", _examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_options_exist(page, name, rest):
    command = cli.get_command(click.Context(cli), name)
    written = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest))
    unknown = written - _options(command)
    assert not unknown, f"{page}: `galmoco {name}{rest}` uses {sorted(unknown)}"
