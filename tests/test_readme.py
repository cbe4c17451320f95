"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)  # it saves gauss.h5 and out/bench-small in the working directory
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})
    assert (tmp_path / "gauss.h5").exists() and (tmp_path / "out" / "bench-small" / "results.md").exists()
