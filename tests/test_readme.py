"""The README's Python example runs as written, and its first two commands are the documented ones
(its other command lines: test_doc_commands.py)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(compile(example, "README.md", "exec"), names)
    assert "selected% of candidates: 5.0" in capsys.readouterr().out
    assert (tmp_path / "delta.safetensors").stat().st_size > 0
    # what the delta does not hold never trained: the excluded embeddings are frozen, the head is dense
    selector, optimizer = names["selector"], names["optimizer"]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, param in names["model"].named_parameters():
        if name.startswith("backbone.") and name not in selector.candidates:
            assert "embeddings" in name and not param.requires_grad and id(param) not in optimized, name
        elif name.startswith("head."):
            assert id(param) in optimized, name


def test_first_two_commands_are_demo_and_tests():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci

