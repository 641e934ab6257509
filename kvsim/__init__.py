"""kvsim: what will this model, on this GPU, with this KV-cache policy, do under this traffic?"""

__version__ = "0.1.0"
