"""JSON results files (core.files): strict JSON, undefined numbers as null, atomic writes."""

import json

import pytest

from analytic_denoisers.core.files import write_json


def test_write_json_is_strict_with_undefined_numbers_as_null(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": [1.5, float("nan")], "b": (float("inf"), -float("inf")),
                                                       "c": {"d": 2}})
    text = path.read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) == \
        {"a": [1.5, None], "b": [None, None], "c": {"d": 2}}
    assert not [p for p in path.parent.iterdir() if p.name != "r.json"]  # no temporary file left
