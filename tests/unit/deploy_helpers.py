"""Readers for the deploy files: Dockerfile instructions, compose services, Procfile commands, and the
`hark <sub>` commands they run (checked against :data:`hark.cli.SUBCOMMANDS`)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "deploy" / "docker"


@dataclass
class Instruction:
    keyword: str
    args: str

    def argv(self) -> list[str]:
        """The arguments as a list: exec form (JSON) or shell form (split like a shell would)."""
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else shlex.split(text)


def dockerfile_stages(path: Path) -> list[list[Instruction]]:
    """Instructions of each build stage of a Dockerfile (line continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    stages: list[list[Instruction]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return [stage for stage in stages if stage]


def final_stage(path: Path) -> list[Instruction]:
    return dockerfile_stages(path)[-1]


def shell_words(command: str) -> list[str]:
    """Words of a shell command line, with `;`, `&&`, `|` as words of their own."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def hark_subcommands(argv: list[str] | str) -> list[str]:
    """Every `hark <sub>` in a command (also `.venv/bin/hark ...` and inside `sh -c` strings)."""
    found = []
    argv = [argv] if isinstance(argv, str) else argv
    words = [w for arg in argv for w in (shell_words(arg) if " " in arg else [arg])]
    for i, word in enumerate(words[:-1]):
        if word == "hark" or word.endswith("/hark"):
            found.append(words[i + 1])
    return found


def healthcheck_url(argv: list[str]) -> str | None:
    """The http URL a healthcheck command fetches (python urllib one-liners), or None."""
    match = re.search(r"http://[^'\"\s)]+", " ".join(argv))
    return match.group(0) if match else None


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def procfile_entries(path: Path) -> dict[str, str]:
    """Process name -> command line of a Procfile (comments and blank lines skipped)."""
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def assignments(command: str) -> dict[str, str]:
    """VAR=value words of a shell command line (quotes removed, expansions left as written)."""
    return dict(w.split("=", 1) for w in shlex.split(command) if re.match(r"^[A-Z_][A-Z0-9_]*=", w))
