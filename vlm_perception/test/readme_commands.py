"""The commands README.md tells users to type, read from README.md at test time.

A command is a line of a ```bash block (backslash continuations joined, `# comments`
dropped) or a `$ `-prompted line of any other block. Tests select them by their first
words, so a command that changes in the README changes what the tests run.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Sequence

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")


def lines() -> list[str]:
    """Every README command line, as written (continuations joined)."""
    commands: list[str] = []
    language = None  # None: outside a fenced block
    pending = ""
    for raw in README.read_text().splitlines():
        fence = FENCE.match(raw.strip())
        if fence:
            language = None if language is not None else fence.group(1)
            pending = ""
            continue
        if language is None:
            continue
        line = raw.strip()
        if language != "bash":
            if line.startswith("$ "):
                commands.append(line[2:])
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    return commands


def commands(*prefix: str) -> list[list[str]]:
    """Every README command whose words start with `prefix`, as argv lists, in README order, once each."""
    found: list[list[str]] = []
    for line in lines():
        try:
            argv = shlex.split(line, comments=True)
        except ValueError:  # a line that is not a shell command on its own
            continue
        if argv[:len(prefix)] == list(prefix) and argv not in found:
            found.append(argv)
    return found


def launch_arguments(argv: Sequence[str]) -> dict[str, str]:
    """The `name:=value` arguments of a `ros2 launch` command."""
    return dict(arg.split(":=", 1) for arg in argv if ":=" in arg and not arg.startswith("-"))


def ros_arg(argv: Sequence[str], flag: str, name: str) -> str:
    """The value of `flag name:=value` in a command's ROS arguments (e.g. -r image:=...)."""
    for option, value in zip(argv, argv[1:]):
        if option == flag and value.startswith(name + ":="):
            return value.split(":=", 1)[1]
    raise KeyError(f"{flag} {name}:=... not in {shlex.join(argv)}")
