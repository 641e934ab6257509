"""benchmarks/calibration/a100_operators.py's arithmetic, on hand-made Vidur tables and profiles
(not Vidur's data): Vidur's layer sum, kvsim's dense part, and the three errors."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvsim.errors import KvsimError
from kvsim.models import load_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "calibration" / "a100_operators.py"
_spec = importlib.util.spec_from_file_location("a100_operators", SCRIPT)
a100 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(a100)

LLAMA_2_7B = load_model("llama-2-7b")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Which operators Vidur's predictor adds per layer is the script's reading of Vidur, which no
# hand-made table can check: the tables take its list, and the tests check what it does with it.
OPERATORS = a100.LAYER_OPERATORS


def vidur_row(tokens: int, workers: int, per_op_ms: float, emb_ms: float = 100.0) -> dict:
    """One mlp.csv row of Llama-2-7B's shape: every layer operator's median ``per_op_ms``
    (other statistics far off, so that reading the wrong one shows), the embedding ``emb_ms``
    (not a layer operator)."""
    row = {"num_tokens": tokens, "num_tensor_parallel_workers": workers}
    for op in (*OPERATORS, "emb"):
        median = emb_ms if op == "emb" else per_op_ms
        row |= {f"time_stats.{op}.{s}": 1000.0 for s in ("min", "max", "mean", "std")}
        row[f"time_stats.{op}.median"] = median
    return row | {
        "n_head": 32,
        "n_kv_head": 32,
        "n_embd": 4096,
        "n_expanded_embd": 11008,
        "vocab_size": 32768,
    }


def hand_table() -> pd.DataFrame:
    rows = [
        vidur_row(1, 1, 0.01),
        vidur_row(64, 1, 0.02),
        vidur_row(64, 1, 0.04),  # measured twice: the median of the two is 0.03
        vidur_row(64, 1, 0.03),
        vidur_row(1, 2, 5.0),  # another tensor-parallel degree: not taken at TP 1
    ]
    return pd.DataFrame(rows)


def test_vidur_sum_is_the_layer_operators_medians_times_the_layers():
    ms = a100.vidur_layers_ms(hand_table(), LLAMA_2_7B, 1, "hand")
    # every layer operator, 32 layers; the embedding and the TP-2 row left out
    per_layer = len(OPERATORS)
    assert ms.to_dict() == pytest.approx({1: per_layer * 0.01 * 32, 64: per_layer * 0.03 * 32})


def test_vidur_table_of_another_model_or_degree_is_refused():
    other = hand_table().assign(n_expanded_embd=14336)
    with pytest.raises(KvsimError, match="n_expanded_embd"):
        a100.vidur_layers_ms(other, LLAMA_2_7B, 1, "hand")
    with pytest.raises(KvsimError, match="no rows at 4"):
        a100.vidur_layers_ms(hand_table(), LLAMA_2_7B, 4, "hand")
    with pytest.raises(KvsimError, match="no column time_stats.add.median"):
        a100.vidur_layers_ms(hand_table().drop(columns="time_stats.add.median"), LLAMA_2_7B, 1, "hand")


# Llama-2-7B by hand: per layer 4 h^2 attention + 3 h f MLP + 2 h norm weights; embedding and
# LM head vocab x h each, and the final norm.
H, F, V, LAYERS = 4096, 11008, 32000, 32
LAYER_PARAMS = LAYERS * (4 * H * H + 3 * H * F + 2 * H)
BYTE_SHARE = LAYER_PARAMS / (LAYER_PARAMS + 2 * V * H + H)
FLOP_SHARE = LAYERS * (4 * H * H + 3 * H * F) / (LAYERS * (4 * H * H + 3 * H * F) + V * H)


def hand_profile(scale: float) -> dict:
    """What the script reads of a profile; ``scale`` multiplies every term (a second GPU)."""
    return {
        "tensor_parallel": 1,
        "gpu": {"name": "h100-sxm-80gb"},
        "graph_batch_sizes": [1, 2, 4, 8, 16, 32, 64],
        "attention_partition": [512] * 7,
        "coefficients": {
            "decode": {"fixed": 0.003 * scale, "weights": 0.004 * scale, "batch": 1e-5 * scale}
            | {"batch_squared": 1e-8 * scale, "context": 1.0, "partition": 1.0}
        },
        "prefill_padding": {"sizes": [16, 32, 64], "multiple": 128, "graphs": [16, 32, 64, 128]},
        "prefill_tokens": {
            "tokens": [16, 32, 64, 128],
            "seconds": [0.010 * scale, 0.011 * scale, 0.013 * scale, 0.020 * scale],
            "weights_s": 0.004 * scale,
        },
    }


def test_layer_shares_of_llama_2_7b():
    assert a100.layer_shares(LLAMA_2_7B) == pytest.approx((BYTE_SHARE, FLOP_SHARE))


def test_kvsim_dense_part_of_a_decode_and_a_prefill():
    doc = hand_profile(1.0)
    # 3 sequences run in the graph of 4 rows: weight read plus the per-row terms; no context
    decode = 0.004 * BYTE_SHARE + (1e-5 * 4 + 1e-8 * 16) * FLOP_SHARE
    assert a100.kvsim_dense_s(doc, LLAMA_2_7B, "decode", 3) == pytest.approx(decode)
    # 40 tokens are padded to 64: what the table adds beyond its first entry, and the weight read
    prefill = 0.004 * BYTE_SHARE + (0.013 - 0.010)
    assert a100.kvsim_dense_s(doc, LLAMA_2_7B, "prefill", 40) == pytest.approx(prefill)
    assert a100.kvsim_kept_s(doc, "decode") == 0.003
    assert a100.kvsim_kept_s(doc, "prefill") == pytest.approx(0.010 - 0.004)


def test_comparison_rows_and_errors():
    derived, source = hand_profile(2.0), hand_profile(1.0)
    derived["gpu"] = {"name": "a100-80gb"}
    vidur = {
        "a100-80gb": pd.Series({1: 10.0, 64: 12.0, 128: 40.0, 256: 90.0}),
        "h100-sxm-80gb": pd.Series({1: 5.0, 64: 8.0, 128: 20.0, 256: 45.0}),
    }
    rows = a100.compare("llama-2-7b", derived, source, vidur, COMMIT).set_index(["step", "tokens"])
    # decode up to the largest graph (64), prefill up to the table's last entry (128)
    assert list(rows.index) == [
        ("decode", 1),
        ("decode", 64),
        ("prefill", 1),
        ("prefill", 64),
        ("prefill", 128),
    ]
    x = rows.loc[("prefill", 128)]
    kvsim_a100 = 1e3 * (0.008 * BYTE_SHARE + 2 * (0.020 - 0.010))
    kvsim_h100 = 1e3 * (0.004 * BYTE_SHARE + (0.020 - 0.010))
    assert x["kvsim_a100_ms"] == pytest.approx(kvsim_a100)
    assert x["a100_error"] == pytest.approx(kvsim_a100 / 40.0 - 1)
    assert x["source_error"] == pytest.approx(kvsim_h100 / 20.0 - 1)
    # kvsim's factor is 2 (every term doubled), Vidur's 40 / 20 = 2: no error of the rule's own
    assert x["rule_error"] == pytest.approx(0.0, abs=1e-12)
    assert rows.loc[("decode", 64), "rule_error"] == pytest.approx(2 / (12.0 / 8.0) - 1)
    assert rows.loc[("decode", 1), "kvsim_kept_ms"] == pytest.approx(6.0)
    assert set(rows["vidur_commit"]) == {COMMIT}


def test_without_vidur_on_the_source_gpu_the_source_columns_are_empty():
    derived, source = hand_profile(2.0), hand_profile(1.0)
    rows = a100.compare("llama-2-7b", derived, source, {"a100-80gb": pd.Series({1: 10.0})}, COMMIT)
    assert rows[["vidur_source_ms", "source_error", "rule_error"]].isna().all().all()
    assert rows["a100_error"].notna().all()


@given(
    factor=st.floats(0.2, 5.0), vidur_h100_ms=st.floats(1.0, 100.0), tokens=st.sampled_from([1, 16, 64, 128])
)
def test_rule_error_is_zero_exactly_when_vidur_measures_the_rules_factor(factor, vidur_h100_ms, tokens):
    """Whatever each runner's speed: Vidur's A100 time = its H100 time x (kvsim A100 / kvsim
    H100) leaves no rule error and the same error on both GPUs; Vidur's A100 time x 1.1 leaves
    the rule 1/1.1 - 1."""
    derived, source = hand_profile(factor), hand_profile(1.0)
    kvsim_factor = a100.kvsim_dense_s(derived, LLAMA_2_7B, "prefill", tokens) / a100.kvsim_dense_s(
        source, LLAMA_2_7B, "prefill", tokens
    )
    on_h100 = pd.Series({tokens: vidur_h100_ms})
    for vidur_a100, rule in (
        (vidur_h100_ms * kvsim_factor, 0.0),
        (vidur_h100_ms * kvsim_factor * 1.1, 1 / 1.1 - 1),
    ):
        vidur = {"a100-80gb": pd.Series({tokens: vidur_a100}), "h100-sxm-80gb": on_h100}
        x = a100.compare("llama-2-7b", derived, source, vidur, COMMIT).query("step == 'prefill'").iloc[0]
        assert x["rule_error"] == pytest.approx(rule, abs=1e-9)
        assert (1 + x["a100_error"]) / (1 + x["source_error"]) == pytest.approx(1 + rule)


def write_checkout(root: Path, table: pd.DataFrame) -> None:
    path = root / "data" / "profiling" / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
    path.parent.mkdir(parents=True)
    table.to_csv(path, index=False)


def run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_a_missing_a100_table_is_refused(tmp_path):
    """A checkout with Llama-2-7B's A100 table only: Llama-3-8B's (a derived A100 profile is
    shipped for it) is missing, which stops the script before it writes anything."""
    table = pd.DataFrame([vidur_row(1, 1, 0.01), vidur_row(64, 1, 0.03)])
    write_checkout(tmp_path, table)
    done = run_script(tmp_path, "--commit", COMMIT, "--out", tmp_path / "out.csv")
    assert done.returncode == 2, done.stderr
    assert "Meta-Llama-3-8B/mlp.csv: no such file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out.csv").exists()


def test_script_writes_the_comparison(tmp_path, monkeypatch):
    table = pd.DataFrame([vidur_row(1, 1, 0.01), vidur_row(64, 1, 0.03)])
    write_checkout(tmp_path, table)
    monkeypatch.setattr(a100, "models_to_compare", lambda: ["llama-2-7b"])
    out = tmp_path / "out.csv"
    a100.main([str(tmp_path), "--commit", COMMIT, "--out", str(out)])
    rows = pd.read_csv(out)
    assert list(rows.columns) == a100.COLUMNS
    assert sorted(set(zip(rows["step"], rows["tokens"]))) == [
        ("decode", 1),
        ("decode", 64),
        ("prefill", 1),
        ("prefill", 64),
    ]
    assert rows["vidur_a100_ms"].tolist() == pytest.approx(
        [len(OPERATORS) * ms * 32 for ms in (0.01, 0.03)] * 2
    )
    assert rows["a100_error"].tolist() == pytest.approx(
        (rows["kvsim_a100_ms"] / rows["vidur_a100_ms"] - 1).tolist(),
        abs=1e-4,  # 5 digits written
    )
    assert rows["rule_error"].isna().all()  # no H100 table in this checkout


@pytest.mark.parametrize(
    "args, message",
    [
        (["{root}/nowhere"], "no data/profiling/compute"),
        (["{root}", "--commit", "abc"], "not a full 40-digit"),
        (["{root}"], "not the top of a git checkout"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    write_checkout(tmp_path, pd.DataFrame([vidur_row(1, 1, 0.01)]))
    done = run_script(*(a.format(root=tmp_path) for a in args), "--out", tmp_path / "out.csv")
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("num_tokens,time_stats.add.median\n1,0.5\n", "no column time_stats.input_layernorm.median"),
        (None, "time_stats.add.median holds something other than numbers"),
        ("", "not a readable CSV"),
    ],
)
def test_unreadable_vidur_table_is_one_line(tmp_path, text, message):
    write_checkout(tmp_path, pd.DataFrame([vidur_row(1, 1, 0.01)]))
    path = next(tmp_path.rglob("mlp.csv"))
    if text is None:  # every column, one median not a number
        pd.DataFrame([vidur_row(1, 1, 0.01) | {"time_stats.add.median": "fast"}]).to_csv(path, index=False)
    else:
        path.write_text(text)
    done = run_script(tmp_path, "--commit", COMMIT, "--out", tmp_path / "out.csv")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr
