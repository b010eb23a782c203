"""Every `fishertune ...` line in the README's and docs/'s shell blocks is one the CLI accepts: an example
parses as written, and a synopsis (a line with [optional] parts) names only options its command has. A
renamed flag or command fails here, not in a user's terminal."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from fishertune.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:torchrun .*?-m fishertune\.cli|fishertune)\s+(.*)$")


def shell_lines(text: str) -> list[str]:
    """The lines of the untyped, bash and text code blocks, continuations joined and comments cut."""
    blocks = [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S)
              if lang in ("", "bash", "text")]
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line.split(" #")[0].strip() for line in lines]


def command_lines(page: Path) -> list[str]:
    return [match.group(1) for line in shell_lines(page.read_text()) if (match := COMMAND.match(line))]


def subcommand(argv: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The command's words (e.g. ["data", "check"]) and its own parser."""
    parser, words = build_parser(argv), []
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or not argv[len(words):] or argv[len(words)] not in actions[0].choices:
            return words, parser
        words.append(argv[len(words)])
        parser = actions[0].choices[words[-1]]


def test_the_pages_show_commands():
    lines = [line for page in PAGES for line in command_lines(page)]
    assert len(lines) >= 30
    assert sum("[" in line for line in lines) >= 8  # cli.md's synopses


def problems(page: Path) -> list[str]:
    """What is wrong with the page's command lines: an example that does not parse, a synopsis option or
    command the CLI does not have."""
    found = []
    for line in command_lines(page):
        if "[" in line:  # a synopsis: each option it names exists
            words, parser = subcommand(line.split())
            known = {s for action in parser._actions for s in action.option_strings}
            unknown = sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", line)) - known)
            if not words or unknown:
                found.append(f"{page.name}: `fishertune {line}`: no command or no option {unknown}")
            continue
        argv = shlex.split(line)
        try:
            build_parser(argv).parse_args(argv)
        except SystemExit:
            found.append(f"{page.name}: `fishertune {line}` does not parse")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_is_accepted(page):
    assert problems(page) == []


def test_a_renamed_option_or_command_is_caught(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("```bash\nfishertune eval RUN [--jsn OUT]\nfishertune eval RUN --jsn out.json\n"
                    "fishertune evaluate RUN [--json OUT]\nfishertune eval RUN --json out.json\n```\n")
    found = problems(page)
    assert len(found) == 3 and all("eval" in line for line in found)
    assert "--jsn" in found[0] and "does not parse" in found[1] and "evaluate" in found[2]
