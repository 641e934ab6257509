"""One thing at a time: a first-in, first-out server on SimPy's clock.

Two parts of a shared GPU hand work on only after a delay, and only one piece at a time: the
GPU's front end, which launches each kernel after its launch gap (kvsim.gpushare.gpu), and the
application's one launching thread, which submits each whole job in its launch latency
(kvsim.gpushare.policies.hardware). Both are this server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import simpy

Item = TypeVar("Item")


class OneAtATime(Generic[Item]):
    """Serves items in arrival order, each for ``service_s(item)``, then hands it to ``done``.
    An item with no service time that finds the server idle is handed on at once."""

    def __init__(
        self, env: simpy.Environment, service_s: Callable[[Item], float], done: Callable[[Item], None]
    ):
        self.env, self.service_s, self.done = env, service_s, done
        self.queue: deque[Item] = deque()  # the item in service first

    def __len__(self) -> int:
        return len(self.queue)

    def put(self, item: Item) -> None:
        if not self.queue and self.service_s(item) == 0:
            self.done(item)
            return
        self.queue.append(item)
        if len(self.queue) == 1:
            self._serve_head()

    def _serve_head(self) -> None:
        self.env.timeout(self.service_s(self.queue[0])).callbacks.append(lambda _event: self._served())

    def _served(self) -> None:
        item = self.queue.popleft()
        if self.queue:
            self._serve_head()
        self.done(item)
