"""The registry of attention variants: one entry per variant drives tests, benchmarks and tables.

``VARIANTS[name]`` is callable with the kit's convention, ``VARIANTS[name](q, k, v, **kw)``, and
also carries what the course tables show (family, cost, paper) and example keyword arguments
that tests and benchmarks use. Adding a variant is one :func:`register` call next to its code.

Token mixers that are not attention functions (Synthesizer, FNet, gMLP, MLP-Mixer) are modules:
``MIXERS[name].cls(**MIXERS[name].example_kwargs)`` maps ``x (B, N, C)`` to ``(B, N, C)``. They are
added with :func:`register_mixer`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn

__all__ = ["Variant", "VARIANTS", "register", "Mixer", "MIXERS", "register_mixer"]


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


@dataclass(frozen=True)
class Mixer:
    """One token mixer that is a module rather than an attention function.

    Attributes:
        name: registry key, e.g. ``"fnet"``.
        cls: the module class; ``cls(dim=C, seq_len=N, **hyperparameters)`` maps ``(B, N, C)`` to
            ``(B, N, C)`` for any N <= seq_len.
        family: the course's grouping ("synthesizer", "attention-free").
        cost: time and memory in the kit's symbols, e.g. ``"O(N·C·log(N·C)) time, O(N·C) memory"``.
        paper: where it comes from.
        example_kwargs: constructor arguments for a small representative module (tests, benchmarks).
        block: True when the module is a whole block with its own residual and norms (FNet, gMLP,
            MLP-Mixer), False when it replaces an attention layer inside a block (Synthesizers).
    """

    name: str
    cls: type[nn.Module]
    family: str
    cost: str
    paper: str
    example_kwargs: dict[str, Any] = field(default_factory=dict)
    block: bool = False

    def __call__(self, **kwargs) -> nn.Module:
        """A new module built with ``example_kwargs`` updated by ``kwargs``."""
        return self.cls(**{**self.example_kwargs, **kwargs})


MIXERS: dict[str, Mixer] = {}


def register_mixer(name: str, cls: type[nn.Module], *, family: str, cost: str, paper: str,
                   example_kwargs: dict[str, Any] | None = None, block: bool = False) -> Mixer:
    """Add a token-mixing module to :data:`MIXERS` (a name may be registered once)."""
    if name in MIXERS:
        raise ValueError(f"token mixer {name!r} is already registered")
    mixer = Mixer(name, cls, family, cost, paper, dict(example_kwargs or {}), block)
    MIXERS[name] = mixer
    return mixer
