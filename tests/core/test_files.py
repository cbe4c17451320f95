"""JSON results files (core.files): strict JSON, undefined numbers as null, atomic writes that keep
links and permissions and clean up after killed writes."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from analytic_denoisers.core.files import _temporary_prefix, atomic_write, write_json


def test_write_json_is_strict_with_undefined_numbers_as_null(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": [1.5, float("nan")], "b": (float("inf"), -float("inf")),
                                                       "c": {"d": 2}})
    text = path.read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) == \
        {"a": [1.5, None], "b": [None, None], "c": {"d": 2}}
    assert not [p for p in path.parent.iterdir() if p.name != "r.json"]  # no temporary file left


def test_atomic_write_keeps_links_and_permissions_and_cleans_up_after_killed_writes(tmp_path):
    def write(text):
        return lambda tmp: Path(tmp).write_text(text)

    target = tmp_path / "real.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write(link, write("new"))
    assert link.is_symlink() and target.read_text() == "new"  # the link is kept, its target written
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # a private file stays private

    # a save killed after writing its temporary file: a process that has exited left it behind
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{_temporary_prefix(target).replace(str(os.getpid()), gone.stdout.strip())}abc12345.tmp"
    running = tmp_path / f"{_temporary_prefix(target)}def45678.tmp"  # a write still in progress
    other_file = tmp_path / f".real.json.500.{gone.stdout.strip()}.abc12345.tmp"  # of "real.json.500"
    for path in (stale, running, other_file):
        path.write_text("partial")
    atomic_write(target, write("newer"))
    assert not stale.exists() and running.exists() and other_file.exists() and target.read_text() == "newer"
