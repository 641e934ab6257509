"""A check on every test: each summary.json it writes must be strict JSON.

Python's json writes a metric with nothing to measure as a bare ``NaN``, which jq, JavaScript
and most other parsers refuse; summary.json is meant to be read by any of them.
"""

import json

import pytest


def strict_json(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as strict parsers do."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After a test that passed, parse every summary.json under its tmp_path strictly."""
    result = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if tmp_path is not None:
        for path in tmp_path.rglob("summary.json"):
            try:
                strict_json(path.read_text())
            except ValueError as err:
                pytest.fail(f"{path} is not strict JSON: {err}")
    return result
