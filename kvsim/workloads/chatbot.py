"""``chatbot``: multi-turn conversations, the paper's chatbot setting, where prefix caching pays.

Each turn's prompt is the conversation so far (earlier user messages and replies, then the
new message) truncated to its last ``MAX_PROMPT`` tokens, and replies are capped at
``MAX_OUTPUT`` tokens, as in the paper's chatbot experiment. Message and reply lengths are
drawn from the built-in ShareGPT summary (first-turn lengths, the best the paper's data
offers). A conversation's tokens form one stream (``prefixes.synth_tokens``), so turn t+1's
prompt repeats turn t's prompt and reply token for token, until truncation shifts it.

Assumptions, all module constants: turns per conversation are 1 + geometric with mean
``MEAN_TURNS``; a conversation's first turn arrives in a Poisson process of rate
``rate / MEAN_TURNS`` (so requests arrive at about ``rate``), and each next turn follows
its predecessor's arrival after an exponential think time of mean ``THINK_TIME_S`` (the
trace is open-loop: a turn does not wait for the reply it follows).
"""

from __future__ import annotations

import numpy as np

from kvsim.workloads.builtin import load_summary, sample_sharegpt
from kvsim.workloads.trace import Trace

MAX_PROMPT = 1024
MAX_OUTPUT = 1024
MEAN_TURNS = 4.0
THINK_TIME_S = 30.0


def build_chatbot(num_requests: int, rate: float, seed: int = 0) -> Trace:
    rng = np.random.default_rng([seed, 0xC4A7])
    summary = load_summary("sharegpt")
    arrivals, prompts, outputs, streams, starts = [], [], [], [], []
    start_time, conversation = 0.0, 0
    while len(arrivals) < num_requests:
        turns = int(rng.geometric(1.0 / MEAN_TURNS))
        messages, replies = sample_sharegpt(summary, rng, turns)
        now, position = start_time, 0
        for message, reply in zip(messages.tolist(), replies.tolist()):
            end = position + message
            prompt = min(end, MAX_PROMPT)
            arrivals.append(now)
            prompts.append(prompt)
            outputs.append(min(max(reply, 1), MAX_OUTPUT))
            streams.append(conversation)
            starts.append(end - prompt)
            position = end + outputs[-1]
            now += rng.exponential(THINK_TIME_S)
        conversation += 1
        start_time += rng.exponential(MEAN_TURNS / rate)
    order = np.argsort(np.asarray(arrivals), kind="stable")[:num_requests]
    prompts, outputs, streams, starts = (
        np.asarray(v, dtype=np.int64)[order] for v in (prompts, outputs, streams, starts)
    )
    return Trace(
        "chatbot",
        np.asarray(arrivals)[order],
        prompts,
        outputs,
        {"stream_id": streams, "stream_start": starts},
    )
