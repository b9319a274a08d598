"""The `herald` command exposes every package's commands under the documented names."""

import subprocess
import sys

from herald.cli import build


def test_every_documented_command_is_mounted() -> None:
    names = set(build().commands)
    documented = {"stack", "senders", "processor", "send", "users", "schedules", "api"}
    documented |= {"replay", "dlq", "status", "stats", "demo", "templates"}
    assert documented <= names
    templates = build().commands["templates"].commands  # type: ignore[attr-defined]
    assert set(templates) == {"create", "version", "list", "show", "preview", "delete"}


def test_help_runs_as_a_console_command() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from herald.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "replay" in done.stdout and "stack" in done.stdout
