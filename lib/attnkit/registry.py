"""The registry of attention variants: one entry per variant drives tests, benchmarks and tables.

``VARIANTS[name]`` is callable with the kit's convention, ``VARIANTS[name](q, k, v, **kw)``, and
also carries what the course tables show (family, cost, paper) and example keyword arguments
that tests and benchmarks use. Adding a variant is one :func:`register` call next to its code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

__all__ = ["Variant", "VARIANTS", "register"]


@dataclass(frozen=True)
class Variant:
    """One attention variant.

    Attributes:
        name: registry key, e.g. ``"dense"``.
        fn: the attention function ``fn(q, k, v, *, **hyperparameters) -> out``.
        family: the course's grouping ("dense", "fixed pattern", "low rank", "kernel", ...).
        cost: time and memory in the kit's symbols, e.g. ``"O(N·M·D) time, O(N·M) memory"``.
        paper: where it comes from.
        example_kwargs: hyperparameters for a representative call (tests, benchmarks).
        reference: the dense, obviously-correct form it must equal (None for ``dense`` itself).
    """

    name: str
    fn: Callable[..., Tensor]
    family: str
    cost: str
    paper: str
    example_kwargs: dict[str, Any] = field(default_factory=dict)
    reference: Callable[..., Tensor] | None = None

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        return self.fn(q, k, v, **kwargs)


VARIANTS: dict[str, Variant] = {}


def register(name: str, fn: Callable[..., Tensor], *, family: str, cost: str, paper: str,
             example_kwargs: dict[str, Any] | None = None,
             reference: Callable[..., Tensor] | None = None) -> Variant:
    """Add a variant to :data:`VARIANTS` (a name may be registered once)."""
    if name in VARIANTS:
        raise ValueError(f"attention variant {name!r} is already registered")
    variant = Variant(name, fn, family, cost, paper, dict(example_kwargs or {}), reference)
    VARIANTS[name] = variant
    return variant
