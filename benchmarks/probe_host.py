"""Host (CPU) time to issue one eager prefill, and of each kind of call in it.

    python3 benchmarks/probe_host.py

Prints microseconds per call, measured without synchronising (issue time only), and the
whole prefill's issue time against its GPU busy time.
"""
import time

import torch
import torch.nn.functional as F

from kvsim.gpu import kernels, ops
from kvsim.gpu.runner import ModelRunner
from kvsim.gpu.timing import fill_random
from kvsim.models import load_model


def issue_us(fn, calls=300):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    issued = (time.perf_counter() - t0) / calls * 1e6
    torch.cuda.synchronize()
    return issued


def main():
    spec = load_model("opt-13b")
    runner = ModelRunner(spec, num_blocks=2048, block_size=16)
    fill_random(runner)
    n, h, d = 16, spec.num_heads, spec.head_dim
    x = torch.randn(n, spec.hidden_size, device="cuda", dtype=torch.float16)
    qkv = torch.randn(n, 3 * h * d, device="cuda", dtype=torch.float16)
    q, k, v = (qkv[:, i * h * d:(i + 1) * h * d].view(n, h, d) for i in range(3))
    slots = torch.arange(n, device="cuda")
    layout = ops.PrefillLayout([n], [0], torch.tensor([0, n], dtype=torch.int32, device="cuda"))
    L = runner.layers[0]
    rows = {
        "F.linear qkv": lambda: F.linear(x, L.qkv_w, L.qkv_b),
        "F.layer_norm": lambda: F.layer_norm(x, (x.shape[-1],), *L.ln1),
        "x + y": lambda: x + x,
        "reshape_and_cache (cupy)": lambda: kernels.reshape_and_cache(k, v, runner.caches[0], runner.caches[1], slots),
        "prefill_attention (varlen)": lambda: ops.prefill_attention(q, k, v, runner.caches[0], runner.caches[1], layout, 0.1),
        "aten._flash_attention_forward": lambda: torch.ops.aten._flash_attention_forward(
            q, k, v, layout.new_offsets, layout.new_offsets, n, n, 0.0, True, False, scale=0.1),
        "F.sdpa (one sequence)": lambda: F.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True),
    }
    for name, fn in rows.items():
        print(f"{name:32s} {issue_us(fn):8.1f} us/call")
    tables = [list(range(8))]
    for tokens in (16, 128):
        ids = [[1] * tokens]
        step = lambda: runner.prefill(ids, tables)
        step()
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            print(f"prefill {tokens} tokens: issue {(t1 - t0) * 1e3:.2f} ms, wall {(t2 - t0) * 1e3:.2f} ms")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.prefill([[1] * 16], tables)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
