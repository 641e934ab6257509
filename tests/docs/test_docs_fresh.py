"""The figures README.md and docs/ quote must be what the code prints now.

Runs the quick part of `python docs/regenerate.py --cheap --check`: the default run, the KV
capacity, the sharing, prefix-caching and swap examples that take a second or two each, the
shipped profiles' fit reports, the cross-GPU transfer check, and (with ../shared/data) the
workload statistics. The slow figures (beam search, the policy comparison) are checked by
`python docs/regenerate.py --check` without --cheap. When this test fails, the code changed
what it prints: run `python docs/regenerate.py` and commit the rewritten docs.
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", ROOT / "docs" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["regenerate"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


regenerate = load_regenerate()


def test_every_marker_names_a_known_figure_of_its_kind():
    for path in regenerate.markdown_files():
        for name, block in regenerate.markers(path.read_text()):
            assert name in regenerate.FIGURES, f"{path.name}: unknown figure {name}"
            assert regenerate.FIGURES[name].block == block, f"{path.name}: {name} is of the other kind"


def test_every_figure_is_quoted_somewhere():
    quoted = {
        name for path in regenerate.markdown_files() for name, _ in regenerate.markers(path.read_text())
    }
    assert set(regenerate.FIGURES) - quoted == set()


def test_no_unclosed_or_misspelt_markers():
    for path in regenerate.markdown_files():
        text = path.read_text()
        opened = re.findall(r"<!-- (?:figure|begin|end): ", text)
        closed = regenerate.markers(text)
        assert len(opened) == len(closed) + sum(1 for _, block in closed if block), path.name


def test_substitute_leaves_text_outside_markers_alone():
    text = "a <!-- figure: x -->1<!-- /figure --> b\n<!-- begin: y -->\n\nold\n\n<!-- end: y -->\nc"
    new, changes = regenerate.substitute(text, {"x": "2", "y": "new"})
    assert new == "a <!-- figure: x -->2<!-- /figure --> b\n<!-- begin: y -->\n\nnew\n\n<!-- end: y -->\nc"
    assert [c[0] for c in changes] == ["x", "y"]
    assert regenerate.substitute(new, {"x": "2", "y": "new"}) == (new, [])


def test_cheap_figures_match_the_code(capsys):
    status = regenerate.main(["--cheap", "--check"])
    report = capsys.readouterr().err
    if status != 0:
        pytest.fail(
            "quoted figures differ from what the code prints; run `python docs/regenerate.py`\n" + report
        )
