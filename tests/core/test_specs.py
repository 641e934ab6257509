import json

import pytest

from kvsim.errors import KvsimError
from kvsim.hardware import load_gpu
from kvsim.models import load_model
from kvsim.sim.capacity import size_kv_cache


def test_opt13b_kv_bytes_per_token_is_800_kib():
    assert load_model("opt-13b").kv_bytes_per_token == 2 * 5120 * 40 * 2 == 800 * 1024


@pytest.mark.parametrize(
    "name, billions", [("opt-13b", 12.85), ("llama-2-7b", 6.74), ("llama-2-13b", 13.02), ("llama-3-8b", 8.03)]
)
def test_parameter_counts_match_published_sizes(name, billions):
    assert load_model(name).param_count / 1e9 == pytest.approx(billions, abs=0.01)


def test_grouped_query_attention_shrinks_kv():
    llama3 = load_model("llama-3-8b")
    assert llama3.num_kv_heads == 8
    assert llama3.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2


def test_opt13b_on_a100_40gb_matches_paper_capacity():
    """The paper's Table 1: ~12 GB of KV cache, 15.7K token slots for OPT-13B on one A100-40GB."""
    cap = size_kv_cache(load_model("opt-13b"), load_gpu("a100-40gb"), 16, 0.9, 2560, 256)
    assert cap.num_slots == pytest.approx(15_700, rel=0.05)
    assert cap.kv_cache_bytes / 1e9 == pytest.approx(12, rel=0.05)


def test_model_that_does_not_fit_is_a_clear_error():
    with pytest.raises(KvsimError, match="weights need"):
        size_kv_cache(load_model("opt-66b"), load_gpu("a100-40gb"), 16, 0.9, 2560, 256)


def test_hf_config_file_is_read(tmp_path):
    config = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1000,
        "max_position_embeddings": 512,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = load_model(str(tmp_path))
    assert (spec.num_kv_heads, spec.head_dim, spec.max_model_len) == (2, 32, 512)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read model config"),
        ('{"model_type": "gpt2", "hidden_size": 1}', "unsupported model_type"),
        ('{"model_type": "llama", "hidden_size": 64}', "lacks field"),
    ],
)
def test_bad_model_configs_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(KvsimError, match=message):
        load_model(str(path))


def test_unknown_names_are_clear_errors():
    with pytest.raises(KvsimError, match="unknown model"):
        load_model("gpt-5")
    with pytest.raises(KvsimError, match="unknown GPU"):
        load_gpu("tpu-v9")
