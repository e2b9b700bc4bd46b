"""The ``galmoco`` group itself: version, help, exit codes, one-line errors."""

import subprocess
import sys

import pytest

from galmoco import __version__
from galmoco.cli import COMMANDS, SUMMARIES


def run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "galmoco", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"galmoco, version {__version__}"


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout
    assert "--verbose" in out.stdout
    assert set(SUMMARIES) == set(COMMANDS)


def test_help_does_not_import_torch():
    code = ("import sys; from galmoco.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_unknown_command_is_a_usage_error():
    out = run("no-such-command")
    assert out.returncode == 2
    assert "No such command 'no-such-command'" in out.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    out = run(name, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Usage: galmoco {name}")
