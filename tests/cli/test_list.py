"""`fishertune list [KIND]`: every registered name of each registry, and one line for an unknown KIND."""

import os
import subprocess
import sys

import pytest
from cli_helpers import one_line

from fishertune.cli.commands import LIST_KINDS
from fishertune.cli.main import main
from fishertune.errors import EXIT_BAD_INPUT

KNOWN = {"tuners": {"fishertune", "lora", "full"}, "backbones": {"dinov2", "clip"}, "heads": {"linear"},
         "datasets": {"cityscapes", "gtav", "acdc"}}
"""A few names each registry must hold: an empty registry (entries no longer registered on import) fails."""


def registries() -> dict[str, list[str]]:
    """The names registered where the project defines each registry (after importing the packages whose
    modules register the entries)."""
    import fishertune.models  # noqa: F401
    import fishertune.tuners  # noqa: F401
    from fishertune.data.layouts import DATASETS
    from fishertune.models.backbones import BACKBONES
    from fishertune.models.heads.base import HEADS
    from fishertune.tuners.base import TUNERS

    registered = {"tuners": TUNERS, "backbones": BACKBONES, "heads": HEADS, "datasets": DATASETS}
    return {kind: sorted(registry) for kind, registry in registered.items()}


def listed(out: str) -> dict[str, list[str]]:
    """{heading: names} of `fishertune list`'s output: a heading ending in ':', then one indented line per
    entry starting with its name; blocks separated by an empty line."""
    blocks = {}
    for block in out.strip().split("\n\n"):
        heading, *lines = block.splitlines()
        assert heading.endswith(":") and not heading.startswith(" "), heading
        assert all(line.startswith("  ") for line in lines), lines
        blocks[heading] = [line.split()[0] for line in lines]
    return blocks


def test_list_prints_every_registered_name_of_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    blocks = listed(out)
    expected = registries()
    assert list(blocks.values()) == [expected[kind] for kind in LIST_KINDS]
    headings = list(blocks)
    assert headings[0].startswith("methods (tuners") and "method.name" in headings[0]
    for kind in LIST_KINDS:
        assert KNOWN[kind] <= set(expected[kind]), kind


@pytest.mark.parametrize("kind", LIST_KINDS)
def test_list_one_kind(kind, capsys):
    assert main(["list", kind]) == 0
    (names,) = listed(capsys.readouterr().out).values()
    assert names == registries()[kind]


def test_list_shows_a_description_where_the_entry_has_one(capsys):
    from fishertune.data.layouts import DATASETS
    from fishertune.tuners import TUNERS

    assert main(["list", "methods"]) == 0  # `methods` is another name for `tuners`
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[0] == "lora" and TUNERS["lora"].paper in line for line in lines[1:])
    assert main(["list", "datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[0] == "gtav" and DATASETS["gtav"].description in line for line in lines[1:])


@pytest.mark.parametrize("kind, hint", [("tuner", " (did you mean 'tuners'?)"),
                                        ("method", " (did you mean 'methods'?)"), ("zzz", "")])
def test_an_unknown_kind_is_one_line_with_exit_2(kind, hint, capsys):
    assert main(["list", kind]) == EXIT_BAD_INPUT
    assert one_line(capsys) == (f"error: unknown kind {kind!r}{hint}; available: backbones, datasets, heads, "
                                f"methods, tuners")
    assert capsys.readouterr().out == ""


def test_list_in_a_fresh_interpreter_registers_every_entry():
    """The program itself (no test has imported the registries for it) lists every registered name."""
    result = subprocess.run([sys.executable, "-m", "fishertune.cli", "list"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    expected = registries()
    assert list(listed(result.stdout).values()) == [expected[kind] for kind in LIST_KINDS]
