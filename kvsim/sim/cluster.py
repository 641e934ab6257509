"""Routers: which replica a new request goes to. One replica needs none, but many deployments
run several and the choice shapes queueing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, Sequence


class Loaded(Protocol):
    @property
    def load(self) -> int: ...


class Router(ABC):
    @abstractmethod
    def choose(self, replicas: Sequence[Loaded]) -> Loaded: ...


class RoundRobinRouter(Router):
    """Replicas in turn, regardless of their state (what a plain load balancer does)."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, replicas):
        replica = replicas[self._next % len(replicas)]
        self._next += 1
        return replica


class LeastLoadedRouter(Router):
    """The replica with the fewest outstanding requests (waiting + running); ties go to the lowest index."""

    def choose(self, replicas):
        return min(replicas, key=lambda r: r.load)


ROUTERS = {"round-robin": RoundRobinRouter, "least-loaded": LeastLoadedRouter}
