"""Usage errors are bad input (exit 6): click's own code for them, 2, means a timeout in this CLI."""

import subprocess
import sys

import pytest


def lipsync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args",
    [
        ("run",),  # missing argument
        ("submit", "--provider", "nope"),  # bad choice
        ("prepare", "--video"),  # option without its value
        ("no-such-command",),
    ],
)
def test_a_usage_error_exits_6_with_the_reason_on_stderr(args):
    done = lipsync(*args)
    assert done.returncode == 6
    assert done.stdout == ""
    assert "Error:" in done.stderr


@pytest.mark.parametrize("args", [(), ("--help",), ("--version",), ("probe", "--help")])
def test_help_and_version_exit_0(args):
    assert lipsync(*args).returncode == 0
