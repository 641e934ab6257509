"""The profile file: a versioned JSON document of one model's measured (or derived) step costs.

docs/calibration.md describes every field. In short: where the numbers come from (GPU,
driver, CUDA, torch, date, provenance), what was measured (model spec, dtype, block
size, the grid's ranges and every raw measurement), and what was fitted (one coefficient
per physical term, with the held-out fit report). Each term has a *scaling class* that
says which hardware rate it is bound by; the cross-GPU transfer scales by that class.
Loading validates everything the cost model reads and turns any defect into a one-line
KvsimError.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import TypedDict

import numpy as np

from kvsim.cost.padding import padded_tokens
from kvsim.errors import KvsimError
from kvsim.hardware import gpu_from_dict, is_number
from kvsim.models import ModelSpec

FORMAT = "kvsim-step-profile"
VERSION = 4  # 2: the engine's per-step term, prefill's token table; 3: padded prefills;
# 4: prefill attention in the attention kernel's thread blocks (prefill_attention)
SHIPPED_DIR = Path(__file__).parent / "profiles"

#: Prefill attention's thread block (FlashAttention-2's forward kernel at head size 128, as the
#: runner calls it): query rows of one head, and the keys it takes per step of its walk. Other
#: head sizes tile differently; calibration warns when it fits another (kvsim.calibration.fit).
ATTENTION_HEAD_DIM = 128
ATTENTION_QUERY_TILE, ATTENTION_KEY_TILE = 128, 64
STRIDE = ATTENTION_QUERY_TILE // ATTENTION_KEY_TILE  # key tiles one query tile adds to the next's walk
#: The range of ``prefill_attention.solo_rate``: a block alone on its SM runs at least at its
#: pace beside another (half the SM) and at most at the whole SM's; within it the attention
#: feature grows with every token (calibration searches it: kvsim.calibration.fit).
SOLO_RATE_RANGE = (0.5, 1.0)

# Per step kind: (term, scaling class). A term's coefficient multiplies its feature (see
# kvsim.calibration.fit) and is in seconds per unit of it. Classes: "fixed" (host work,
# launches: kept across GPUs), "memory" (HBM bytes), "compute" (tensor-core FLOPs),
# "pcie" (host <-> device bytes).
TERMS: dict[str, tuple[tuple[str, str], ...]] = {
    "decode": (
        ("fixed", "fixed"),
        ("weights", "memory"),
        ("batch", "compute"),
        ("context", "memory"),
        ("partition", "memory"),
        ("batch_squared", "compute"),
    ),
    "host": (("fixed", "fixed"), ("batch", "fixed")),
    "engine": (("fixed", "fixed"), ("seqs", "fixed")),
    # Prefill's cost in its token count is the measured token table (see PrefillTokens);
    # these terms add what the table's short sequences leave out.
    "prefill": (
        ("seqs", "fixed"),
        ("attention", "compute"),
        ("gathered", "memory"),
        ("cached", "fixed"),
    ),
    "copy": (("fixed", "fixed"), ("blocks", "memory")),
    "swap": (("fixed", "fixed"), ("blocks", "pcie")),
    # A mixed step (v1: prompt chunks and decodes in one pass) beyond what the prefill and
    # decode terms price in it: the decodes' own attention launches and table uploads, per
    # step and per decoding sequence.
    "mixed": (("fixed", "fixed"), ("decodes", "fixed")),
    # An eager runner's host issuing a decode step's launches (eager profiles only): the GPU
    # cannot finish the step before the host has issued it, so the step's GPU part is at
    # least this long, whatever the GPU's own work (ProfileCostModel.decode_times).
    "issue": (("fixed", "fixed"), ("batch", "fixed")),
}
#: Kinds a profile may lack: measured only since they exist (mixed steps since the v1
#: scheduler), or only where they exist (the host's issue of an eager step). A profile
#: without one prices that kind's steps by the other terms alone.
OPTIONAL_KINDS = ("mixed", "issue")
# The measured range of each step kind: [min, max] per axis; the cost model warns beyond max.
GRID_AXES = {
    "decode": ("batch", "total_context"),
    "engine": ("seqs",),
    "prefill": ("tokens", "seqs", "context"),
    "copy": ("blocks",),
    "swap": ("blocks",),
    "mixed": ("decodes",),
}
PROVENANCE_KINDS = ("measured", "derived", "adjusted")
#: The decode terms that read the KV cache through the block table: a block size's factor
#: (``decode_block_factor``) scales them.
BLOCK_TABLE_TERMS = ("context", "partition")
#: The block sizes whose decode attention cost calibration measures (``decode_block_size``):
#: every power of two a run may use.
BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Appended to the model's name in an eager profile's name (``MODEL-eager@GPU``).
EAGER = "-eager"
# The model fields a step's cost depends on; a profile fits a run whose model agrees on all.
SHAPE_FIELDS = (
    "family",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "dtype",
)


# Features: one column per term of TERMS, in order. "fixed" and "weights" are both the
# constant 1: fitted as one intercept, split afterwards (kvsim.calibration.fit).
def graph_for(sizes, partitions, batch: int) -> tuple[int, int]:
    """Rows and attention partition of the decode graph that runs ``batch`` sequences: the
    smallest captured size that holds it (beyond the largest, eager at the batch itself)."""
    i = int(np.searchsorted(sizes, batch))
    if i < len(sizes):
        return int(sizes[i]), int(partitions[i])
    return batch, int(partitions[-1])


def decode_features(batch: int, padded_batch: int, partition: int, total_context: np.ndarray) -> np.ndarray:
    """Decode GPU time. The graph runs ``padded_batch`` rows through the weights (linear, and
    squared for the GEMMs' turn from memory- to compute-bound as rows grow); attention reads
    the whole context, and one sequence's partition of at most ``partition`` tokens is read
    by one thread block in turn, which bounds a step's latency at small batch (the mean
    context stands for the longest, which the simulator does not pass). The kernel picks
    smaller partitions for small batches, so ``partition`` is the one its graph uses."""
    ctx = np.asarray(total_context, dtype=np.float64)
    # Filled column by column: the simulator asks once per event, and stacking six
    # full-length columns cost more than the product that follows.
    features = np.empty(ctx.shape + (6,))
    features[..., :2] = 1.0
    features[..., 2] = padded_batch
    features[..., 3] = ctx
    np.minimum(ctx / batch, partition, out=features[..., 4])
    features[..., 5] = padded_batch**2
    return features


def host_features(batch: int) -> np.ndarray:
    """The runner's host work of a decode step: input preparation, launch, sampling readback."""
    return np.array([1.0, float(batch)])


def engine_features(num_seqs: int) -> np.ndarray:
    """The serving loop's own work around the runner, every step: scheduling, block-table and
    token bookkeeping, per step and per sequence in the batch."""
    return np.array([1.0, float(num_seqs)])


def attention_blocks(new_tokens, context_lens, heads: int, attention: PrefillAttention) -> float:
    """Prefill attention's work, in the kernel's (query tile, key tile) blocks, as the GPU's
    SMs get through it. The kernel (FlashAttention-2, variable length, causal) gives each
    thread block one query tile of one head; it walks the keys a key tile at a time up to
    its last query's position. The grid is every head x sequence x the longest sequence's
    tile count (a shorter sequence's extra blocks exit at once). Two blocks share an SM.
    The step lasts the longer of two times: all the blocks spread evenly over the SMs (the
    throughput), and the slowest SM at launch (the critical path: a few sequences leave SMs
    idle, or a short prompt after a long cached prefix makes one tile long). With no more
    blocks than SMs each runs alone, at ``solo_rate`` of an SM's pace with two; with more,
    the two longest tiles share an SM until the shorter ends, then the longer runs alone.
    The slowest SM's blocks count times the SM count, so that one coefficient, the GPU's
    seconds per block with every SM busy, prices both (and scales by FLOP/s on another GPU)."""
    longest: list[int] = []  # each sequence's two longest tiles (its last two)
    total = tiles = 0
    for n, c in zip(new_tokens, context_lens):
        count = -(-n // ATTENTION_QUERY_TILE)
        keys = -(-c // ATTENTION_KEY_TILE)  # the last tile walks the whole context
        # Every other tile ends on a key-tile boundary: the cached prefix's key tiles, then
        # STRIDE more per query tile.
        prefix = -(-(c - n) // ATTENTION_KEY_TILE)
        total += (count - 1) * prefix + STRIDE * count * (count - 1) // 2 + keys
        longest.append(keys)
        if count > 1:
            longest.append(prefix + STRIDE * (count - 1))
        tiles = max(tiles, count)
    longest.sort(reverse=True)
    first = longest[0]
    second = longest[1] if len(longest) > 1 else first if heads > 1 else 0
    solo = attention["solo_rate"]
    if heads * len(new_tokens) * tiles > attention["multiprocessors"]:
        slowest = 2 * second + (first - second) / solo
    else:
        slowest = first / solo
    return max(float(heads * total), attention["multiprocessors"] * slowest)


def prefill_features(
    new_tokens: np.ndarray, context_lens: np.ndarray, heads: int, attention: PrefillAttention
) -> np.ndarray:
    """Prefill beyond the token table, per sequence: one each, attention's blocks
    (:func:`attention_blocks`, ``heads`` query heads), every token gathered from the paged
    cache (a batch with any cached prefix gathers every context), and once the gather's own
    launches when there is one."""
    # Plain Python over the batch: a prefill holds a few sequences, and numpy's per-call
    # overhead is what the simulator would pay (the values are integers, so exact either way).
    new, context = np.asarray(new_tokens).tolist(), np.asarray(context_lens).tolist()
    cached = float(any(c > n for n, c in zip(new, context)))
    return np.array(
        [
            float(len(new)),
            attention_blocks(new, context, heads, attention),
            cached * float(sum(context)),
            cached,
        ]
    )


class PrefillTokens:
    """The token table: seconds of a prefill of ``tokens`` new tokens, measured at every
    padded size the runner runs (a step function of waves of GEMM tiles, made monotone),
    extended past the last along the last segment. ``weights_s`` of its first entry is the
    time to stream the weights once (memory-bound; the transfer scales it apart)."""

    def __init__(self, table: PrefillTable, padding: PrefillPadding):
        self.tokens = np.asarray(table["tokens"], dtype=np.float64)
        self.seconds = np.asarray(table["seconds"], dtype=np.float64)
        self.weights_s = float(table["weights_s"])
        self.padding = padding
        self._slope = (self.seconds[-1] - self.seconds[-2]) / (self.tokens[-1] - self.tokens[-2])
        self._seconds: dict[int, float] = {}

    def __call__(self, tokens: float) -> float:
        padded = padded_tokens(self.padding, tokens)
        seconds = self._seconds.get(padded)  # a few dozen padded sizes occur in a run
        if seconds is None:
            if padded <= self.tokens[-1]:
                seconds = float(np.interp(padded, self.tokens, self.seconds))
            else:
                seconds = float(self.seconds[-1] + self._slope * (padded - self.tokens[-1]))
            self._seconds[padded] = seconds
        return seconds


def block_features(num_blocks: float) -> np.ndarray:
    return np.array([1.0, float(num_blocks)])


def mixed_composition(
    table: "PrefillTokens", prefill_terms_s, decode_context_s: float, new_tokens, context_lens
) -> float:
    """A mixed step priced by the other kinds' terms: every token through the dense layers
    (``table`` at the step's total tokens), the chunks' prefill terms (``prefill_terms_s(new,
    context)``: the prefill features priced), and the decodes' (the entries of one new token)
    context read at the decode rate. The cost model adds the mixed term to it; calibration
    fits that term to what this leaves of a measured step."""
    decode = new_tokens == 1
    seconds = table(float(new_tokens.sum())) + decode_context_s * float(context_lens[decode].sum())
    if not decode.all():
        seconds += prefill_terms_s(new_tokens[~decode], context_lens[~decode])
    return seconds


def mixed_features(num_decodes: int) -> np.ndarray:
    """A mixed step's own cost beyond its prefill and decode terms: once, and per decode."""
    return np.array([1.0, float(num_decodes)])


class Provenance(TypedDict):
    # one of PROVENANCE_KINDS: measured here, derived from another GPU's, or another machine's
    # adjusted to this one by `simcli calibrate --check`
    kind: str
    by: str  # the command that wrote it


class PrefillPadding(TypedDict):
    sizes: list[int]  # a prefill up to the last of these runs as the next of them
    multiple: int  # above them, as the next multiple of this
    graphs: list[int]  # the padded sizes replayed as CUDA graphs


class PrefillAttention(TypedDict):
    multiprocessors: int  # SMs of the profile's GPU
    solo_rate: float  # a block's pace alone on its SM over the SM's pace with two (SOLO_RATE_RANGE)


class PrefillTable(TypedDict):
    tokens: list[float]  # measured prefill sizes (new tokens)
    seconds: list[float]  # their wall time
    weights_s: float  # the part of a prefill that does not grow with tokens


class ProfileDoc(TypedDict):
    """A step profile as stored (JSON) and as ``load_profile`` returns it, checked."""

    format: str  # FORMAT
    version: int  # VERSION
    name: str  # model@gpu
    model: dict  # the model spec it was measured with (name and SHAPE_FIELDS)
    gpu: dict  # the GPU spec (``kvsim.hardware.gpu_from_dict`` reads it)
    dtype: str
    tensor_parallel: int  # the shard it measured: 1/N of the model on one GPU
    block_size: int  # the KV block size it measured at
    created: str  # ISO date and time
    provenance: Provenance
    grid: dict[str, dict[str, list[float]]]  # kind -> axis -> [low, high] of the fitted points
    graph_batch_sizes: list[int]
    prefill_padding: PrefillPadding
    attention_partition: list[int]
    coefficients: dict[str, dict[str, float]]  # kind -> term -> seconds per unit (TERMS)
    prefill_tokens: PrefillTable
    prefill_attention: PrefillAttention
    fit_report: dict  # held-out and fitted errors per kind, as fit.fit_report writes them


REQUIRED = tuple(ProfileDoc.__annotations__)


def profile_name(model: str, gpu: str, eager: bool = False) -> str:
    """``MODEL@GPU``; ``MODEL-eager@GPU`` for the runner measured without CUDA graphs."""
    return f"{model}{EAGER if eager else ''}@{gpu}"


def is_eager(doc: dict) -> bool:
    """Whether the profile measured the runner with CUDA graphs off (``"graphs": false``);
    profiles from before the field replayed graphs."""
    return doc.get("graphs", True) is False


def decode_block_factor(doc: dict, block_size: int) -> float | None:
    """Decode attention's cost at ``block_size`` over its cost at the profile's own block
    size: 1 there, the measured factor where the profile's ``decode_block_size`` table has
    one, else None (not measured)."""
    if block_size == doc["block_size"]:
        return 1.0
    return doc.get("decode_block_size", {}).get("factors", {}).get(str(block_size))


def measured_block_sizes(doc: dict) -> list[int]:
    """The block sizes whose decode cost the profile knows: its own, and its table's."""
    table = doc.get("decode_block_size", {}).get("factors", {})
    return sorted({doc["block_size"], *map(int, table)})


def _fail(where: str, why: str) -> KvsimError:
    return KvsimError(f"profile {where}: {why}")


def _non_finite(value: object, path: str = "") -> tuple[str, float] | None:
    """The field path and value of the first NaN or infinity in parsed JSON, else None:
    Python's json reads NaN, Infinity and 1e999 as floats, and one would price a step at
    infinity (or NaN) seconds."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, dict):
        children = ((f"{path}.{key}" if path else key, child) for key, child in value.items())
    elif isinstance(value, list):
        children = ((f"{path}[{i}]", child) for i, child in enumerate(value))
    else:
        return None
    return next(filter(None, (_non_finite(child, where) for where, child in children)), None)


def _count(value: object) -> bool:
    """A positive integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate(doc: object, where: str) -> ProfileDoc:
    """Check what the cost model relies on; return the document unchanged."""
    if not isinstance(doc, dict):
        raise _fail(where, "not a JSON object")
    if doc.get("format") != FORMAT:
        raise _fail(where, f"not a kvsim step profile (format {doc.get('format')!r}, expected {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise _fail(
            where,
            f"format version {doc.get('version')!r} is not supported (this kvsim reads {VERSION}): "
            "refit a measured profile (python -m kvsim.calibration.fit FILE), derive or check the others again",
        )
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise _fail(where, f"missing field(s) {', '.join(missing)}")
    bad = _non_finite(doc)
    if bad:
        raise _fail(where, f"{bad[0]} must be a finite number (got {bad[1]!r})")
    model = doc["model"]
    if not isinstance(model, dict) or any(k not in model for k in ("name", *SHAPE_FIELDS)):
        raise _fail(where, "model must hold the model spec (name, " + ", ".join(SHAPE_FIELDS) + ")")
    gpu_from_dict(doc["gpu"], f"profile {where}", "gpu")
    provenance = doc["provenance"]
    if not isinstance(provenance, dict) or provenance.get("kind") not in PROVENANCE_KINDS:
        raise _fail(where, f"provenance.kind must be one of {', '.join(PROVENANCE_KINDS)}")
    coefficients = doc["coefficients"]
    if not isinstance(coefficients, dict):
        raise _fail(where, "coefficients must be an object")
    for kind, terms in TERMS.items():
        given = coefficients.get(kind)
        if given is None and kind in OPTIONAL_KINDS:
            continue
        if not isinstance(given, dict):
            raise _fail(where, f"coefficients lack {kind!r}")
        for term, _ in terms:
            value = given.get(term)
            if not is_number(value) or value < 0:
                raise _fail(
                    where, f"coefficients.{kind}.{term} must be a non-negative number (got {value!r})"
                )
    table = doc["prefill_tokens"]
    numbers = lambda v: isinstance(v, list) and all(map(is_number, v))
    if not (
        isinstance(table, dict)
        and numbers(table.get("tokens"))
        and numbers(table.get("seconds"))
        and is_number(table.get("weights_s"))
    ):
        raise _fail(where, "prefill_tokens must hold tokens, seconds and weights_s (numbers)")
    tokens, seconds = (np.asarray(table[k], dtype=np.float64) for k in ("tokens", "seconds"))
    if not (
        len(tokens) >= 2
        and tokens.shape == seconds.shape
        and tokens[0] > 0
        and (np.diff(tokens) > 0).all()
        and (np.diff(seconds) >= 0).all()
        and seconds[0] >= table["weights_s"] >= 0
    ):
        raise _fail(
            where,
            "prefill_tokens must give increasing token counts (positive) with "
            "non-decreasing seconds, the first at least weights_s (non-negative)",
        )
    attention = doc["prefill_attention"]
    low, high = SOLO_RATE_RANGE
    if not (
        isinstance(attention, dict)
        and _count(attention.get("multiprocessors"))
        and is_number(attention.get("solo_rate"))
        and low <= attention["solo_rate"] <= high
    ):
        raise _fail(
            where,
            f"prefill_attention must give multiprocessors (a positive integer) and solo_rate (from {low} to {high})",
        )
    increasing = lambda v: isinstance(v, list) and all(map(_count, v)) and v == sorted(set(v))
    if not increasing(doc["graph_batch_sizes"]):
        raise _fail(where, "graph_batch_sizes must be increasing positive integers")
    padding = doc["prefill_padding"]
    if not (
        isinstance(padding, dict)
        and increasing(padding.get("sizes"))
        and increasing([padding.get("multiple")])
    ):
        raise _fail(where, "prefill_padding must give increasing positive sizes and a positive multiple")
    padded = {padded_tokens(padding, t) for t in range(1, int(tokens[-1]) + 1)}
    if not padded <= set(tokens.tolist()):
        raise _fail(where, "prefill_tokens must be measured at every padded prefill size")
    grid = doc["grid"]
    for kind, axes in GRID_AXES.items():
        if (
            kind in OPTIONAL_KINDS
            and kind not in coefficients
            and isinstance(grid, dict)
            and kind not in grid
        ):
            continue
        for axis in axes:
            span = grid.get(kind, {}).get(axis) if isinstance(grid, dict) else None
            if not (
                isinstance(span, list)
                and len(span) == 2
                and all(map(is_number, span))
                and 0 <= span[0] <= span[1]
            ):
                raise _fail(where, f"grid.{kind}.{axis} must be a [min, max] pair of non-negative numbers")
    for field in ("block_size", "tensor_parallel"):
        if not _count(doc[field]):
            raise _fail(where, f"{field} must be a positive integer (got {doc[field]!r})")
    if "graphs" in doc and not isinstance(doc["graphs"], bool):
        raise _fail(where, f"graphs must be true or false (got {doc['graphs']!r})")
    if "decode_block_size" in doc:
        _check_block_table(doc["decode_block_size"], doc["block_size"], where)
    parts = doc["attention_partition"]
    if not (
        isinstance(parts, list) and len(parts) == len(doc["graph_batch_sizes"]) and all(map(_count, parts))
    ):
        raise _fail(where, "attention_partition must give a positive size per graph batch size")
    return doc


def _block_key(key: object) -> bool:
    """A block size as a JSON key: a whole number from 1 to 256, written plainly."""
    return (
        isinstance(key, str) and key.isdigit() and str(int(key)) == key and 1 <= int(key) <= BLOCK_SIZES[-1]
    )


def _check_block_table(table: object, block_size: int, where: str) -> None:
    """The ``decode_block_size`` section: its factors scale the decode terms that read the KV
    cache, so each must be a positive number, for a block size a run may use, and 1 at the
    profile's own block size (the one its coefficients were fitted at)."""
    factors = table.get("factors") if isinstance(table, dict) else None
    if not (
        isinstance(factors, dict)
        and factors
        and all(_block_key(k) and is_number(v) and v > 0 for k, v in factors.items())
    ):
        raise _fail(
            where,
            f"decode_block_size.factors must map block sizes (1 to {BLOCK_SIZES[-1]}) to positive numbers",
        )
    if factors.get(str(block_size)) != 1:
        raise _fail(
            where,
            f"decode_block_size.factors must be 1 at the profile's block size {block_size} "
            f"(got {factors.get(str(block_size))!r})",
        )


def load_profile(path: str | Path) -> ProfileDoc:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        raise _fail(str(path), f"cannot be read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(str(path), f"is not valid JSON ({err})") from None
    return validate(doc, str(path))


def save_profile(doc: ProfileDoc, path: str | Path) -> Path:
    path = Path(path)
    validate(doc, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def model_fields(spec: ModelSpec) -> dict:
    return {f.name: getattr(spec, f.name) for f in fields(spec)}


def check_model(doc: dict, spec: ModelSpec, where: str) -> None:
    """A profile prices one model shape; any other is an error, not a silent misprice."""
    theirs = doc["model"]
    differ = [k for k in SHAPE_FIELDS if theirs[k] != getattr(spec, k)]
    if differ:
        detail = ", ".join(f"{k} {theirs[k]} vs {getattr(spec, k)}" for k in differ)
        raise KvsimError(f"profile {where} was measured for {theirs['name']}, not {spec.name} ({detail})")


def shipped_profiles() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.json"))


def shipped_profile(model: str, gpu: str, eager: bool = False) -> Path | None:
    path = SHIPPED_DIR / f"{profile_name(model, gpu, eager)}.json"
    return path if path.is_file() else None
