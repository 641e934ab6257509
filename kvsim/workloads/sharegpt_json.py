"""ShareGPT conversations (JSON) turned into (prompt, output) token counts.

A file is a list of ``{"conversations": [{"from": ..., "value": ...}, ...]}``. As in the
vLLM paper, a request is a conversation's first exchange: the first human turn is the
prompt and the first assistant turn after it is the output. Conversations without such
an exchange (or with an empty text in it) are skipped, as vLLM's benchmarks skip them.

Token counts come from a Hugging Face tokenizer when a local path is given (counted as
vLLM's benchmark does, ``len(tokenizer(text).input_ids)``, so special tokens included).
Without one they are approximated as ``ceil(characters / 4)``, the usual rule of thumb for
English text with GPT-style BPE vocabularies; expect errors of tens of percent on code
or non-English text, so pass a tokenizer for anything quantitative.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kvsim.errors import KvsimError
from kvsim.workloads.files import FileRows, one_line

HUMAN = frozenset({"human", "user"})
ASSISTANT = frozenset({"gpt", "chatgpt", "assistant", "bard", "bing"})
CHARS_PER_TOKEN = 4


def load_sharegpt(path: Path, tokenizer: str | None = None) -> FileRows:
    """The first exchange of every usable conversation in ``path``, in file order."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise KvsimError(f"cannot read ShareGPT JSON {path}: {one_line(err)}") from None
    except json.JSONDecodeError as err:
        raise KvsimError(f"{path}: malformed JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, list):
        raise KvsimError(
            f"{path}: expected a ShareGPT list of conversations, got a JSON {type(data).__name__}"
        )
    exchanges = [e for n, item in enumerate(data, start=1) if (e := _first_exchange(path, n, item))]
    if not exchanges:
        raise KvsimError(f"{path}: no conversation has a human turn followed by an assistant turn")
    count = token_counter(tokenizer)
    prompts, outputs = zip(*exchanges)
    return FileRows(path.stem, count(list(prompts)), count(list(outputs)))


def _first_exchange(path: Path, number: int, item: object) -> tuple[str, str] | None:
    """(prompt, output) texts of one conversation, or None when it has no usable exchange."""
    turns = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(turns, list) or not all(map(_well_formed, turns)):
        raise KvsimError(
            f'{path}: conversation {number} is not {{"conversations": [{{"from": str, "value": str}}, ...]}}'
        )
    roles = [t["from"].lower() for t in turns]
    first_human = next((i for i, role in enumerate(roles) if role in HUMAN), None)
    if first_human is None:
        return None
    reply = next((i for i in range(first_human + 1, len(turns)) if roles[i] in ASSISTANT), None)
    if reply is None:
        return None
    prompt, output = turns[first_human]["value"], turns[reply]["value"]
    return (prompt, output) if prompt.strip() and output.strip() else None


def _well_formed(turn: object) -> bool:
    return isinstance(turn, dict) and all(isinstance(turn.get(key), str) for key in ("from", "value"))


def token_counter(tokenizer: str | None) -> Callable[[list[str]], np.ndarray]:
    """Token counts of a batch of texts: by a local Hugging Face tokenizer, or approximated."""
    if tokenizer is None:
        return lambda texts: np.array([math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts], dtype=np.int64)
    if not Path(tokenizer).exists():
        raise KvsimError(f"no tokenizer at {tokenizer}: give a local directory with the tokenizer's files")
    try:
        from transformers import AutoTokenizer  # heavy and optional: only when a tokenizer is asked for
    except ImportError:
        raise KvsimError("a tokenizer needs the 'transformers' package (pip install transformers)") from None
    try:
        loaded = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    except Exception as err:  # noqa: BLE001 -- transformers raises many types for a bad path or files
        raise KvsimError(f"cannot load a tokenizer from {tokenizer}: {one_line(err)}") from None
    return lambda texts: np.array([len(ids) for ids in loaded(texts).input_ids], dtype=np.int64)
