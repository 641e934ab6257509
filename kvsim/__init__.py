"""kvsim: what will this model, on this GPU, with this KV-cache policy, do under this traffic?

``kvsim.simulate(config) -> Result`` runs one configuration from Python (kvsim.api,
docs/api.md)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: the library's lower layers import this package, and the API
    # sits on top of all of them.
    if name in ("simulate", "Result"):
        from kvsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'kvsim' has no attribute {name!r}")
