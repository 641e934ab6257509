"""`simcli report paper` writes a page with every section of the paper it reproduces, and each
figure the page shows is a PNG that parses. A tiny run (few requests per point) keeps it fast;
what the numbers say is not asserted here (they come from the runs)."""

import re

import matplotlib.image as mpimg
import pytest
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.experiments.paper import SECTIONS

runner = CliRunner()

TITLES = {
    "table1": "Table 1",
    "fig2": "Fig. 2",
    "fig12": "Fig. 12",
    "fig13": "Fig. 13",
    "fig14": "Fig. 14",
    "fig15": "Fig. 15",
    "fig16": "Fig. 16",
    "fig17": "Fig. 17",
    "fig18b": "Fig. 18b",
    "fig19": "Fig. 19",
}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    result = runner.invoke(
        app, ["report", "paper", "--quick", "--out", str(out), "--num-requests", "6", "--jobs", "1"]
    )
    assert result.exit_code == 0, result.output
    return out, (out / "README.md").read_text()


def test_every_section_has_a_heading_and_a_paragraph_quoting_the_paper(page):
    _, text = page
    assert set(TITLES) == set(SECTIONS)
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert [h.split(":")[0] for h in headings] == [TITLES[key] for key in SECTIONS]
    for block in text.split("\n## ")[1:]:
        assert "paper" in block.split("\n\n")[1]  # each paragraph says what the paper reports


def test_every_figure_is_a_png_that_parses(page):
    out, text = page
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(images) >= len(SECTIONS) - 1  # Table 1 is a table
    for name in images:
        pixels = mpimg.imread(out / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_table1_lists_the_three_opt_models(page):
    _, text = page
    table = text.split("## Table 1")[1].split("\n## ")[0]
    assert all(f"| {model} |" in table for model in ("opt-13b", "opt-66b", "opt-175b"))


def test_an_unknown_section_is_refused_before_any_work(tmp_path):
    result = runner.invoke(app, ["report", "paper", "--out", str(tmp_path / "p"), "--sections", "fig99"])
    assert result.exit_code == 2
    assert "fig99" in result.output and not (tmp_path / "p" / "README.md").exists()
