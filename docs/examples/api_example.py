"""docs/api.md's worked example: run it as `python docs/examples/api_example.py`."""

import kvsim
from kvsim.cost import select_cost_model
from kvsim.cost.cost_model import CostModel

# 1. One run: Llama-2-7B on an A100-80GB, 500 built-in ShareGPT requests at 4 req/s.
result = kvsim.simulate(model="llama-2-7b", gpu="a100-80gb", rate=4.0, num_requests=500)
s = result.summary
print(
    f"served {s['throughput_req_s']:.2f} req/s; TTFT p90 {s['ttft_s_p90']:.3f} s; TPOT p90 {s['tpot_s_p90']:.4f} s"
)

# 2. The requests table: which requests waited longest for their first token?
slowest = result.requests.nlargest(3, "ttft")[["request_id", "prompt_len", "arrival", "ttft", "preemptions"]]
print(slowest.round(3).to_string(index=False))

# 3. The steps table: where the engine's time went, by kind of step.
steps = result.steps
by_kind = steps.groupby("kind").agg(
    events=("steps", "size"), steps=("steps", "sum"), seconds=("duration", "sum")
)
by_kind["share"] = (100 * by_kind.seconds / by_kind.seconds.sum()).map("{:.1f}%".format)
print(by_kind.round(1).to_string())


# 4. One's own cost model: the shipped profile, with every step twice as fast
#    (what would a GPU twice as fast do for this traffic?).
class TwiceAsFast(CostModel):
    name, kind = "profile x0.5", "analytic"

    def __init__(self, base: CostModel) -> None:
        self.base = base

    def prefill_time(self, new_tokens, context_lens):
        return self.base.prefill_time(new_tokens, context_lens) / 2

    def mixed_time(self, new_tokens, context_lens):
        return self.base.mixed_time(new_tokens, context_lens) / 2

    def decode_times(self, batch_size, total_context, steps):
        return self.base.decode_times(batch_size, total_context, steps) / 2

    def copy_time(self, num_blocks):
        return self.base.copy_time(num_blocks) / 2

    def swap_time(self, num_blocks):
        return self.base.swap_time(num_blocks)  # the PCIe link is no faster


faster = kvsim.simulate(
    result.config,
    cost_model=lambda config, model, gpu: TwiceAsFast(select_cost_model(config, model, gpu)),
)
f = faster.summary
print(f"twice as fast: TTFT p90 {f['ttft_s_p90']:.3f} s; TPOT p90 {f['tpot_s_p90']:.4f} s")
