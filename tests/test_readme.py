"""The README's Python example runs as written, and its first two commands are the documented ones."""

import re
import shlex
from pathlib import Path

from fishertune.cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert "selected% of candidates: 5.0" in capsys.readouterr().out
    assert (tmp_path / "delta.safetensors").stat().st_size > 0


def test_first_two_commands_are_demo_and_tests():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_every_command_line_the_readme_shows_parses():
    """Each `fishertune ...` line of the README's shell blocks names a command and flags the CLI has (a
    renamed flag or command fails here, not in a user's terminal)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    argvs = [shlex.split(re.sub(r"^(torchrun .*?-m fishertune\.cli|fishertune)\s", "", line))
             for line in lines if re.match(r"(fishertune|torchrun .*-m fishertune\.cli)\s", line)]
    assert len(argvs) >= 6
    for argv in argvs:
        try:
            build_parser(argv).parse_args(argv)
        except SystemExit as error:
            raise AssertionError(f"the README's `fishertune {' '.join(argv)}` does not parse") from error
