"""Setup for the course notebooks: one call instead of a setup cell copied into every chapter.

    from attnkit.notebook import one_thread, setup

    setup(seed=0)          # seeds, printing, warnings, figure style; prints the versions
    with one_thread():     # time a loop on one thread, then restore the thread count
        ...

A chapter's printed numbers and figures should be the same on every run and every machine
the text was checked on, so :func:`setup` seeds Python's, NumPy's and PyTorch's global
generators and fixes how tensors print and how figures look. Importing this module is cheap:
matplotlib and NumPy are imported by the call, not here.
"""
from __future__ import annotations

import contextlib
import random
import warnings

import torch

__all__ = ["setup", "threads", "one_thread", "triton_device", "FIGURE_STYLE"]

FIGURE_STYLE = {"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3}
"""matplotlib rcParams every chapter uses: moderate resolution, a light grid."""


def setup(seed: int = 0, *, ignore_warnings: bool = True, show: bool = True) -> None:
    """Prepare a course notebook: seed every generator, set printing and figure defaults.

    - ``random.seed``, ``numpy.random.seed`` and ``torch.manual_seed`` with ``seed``, so the
      chapter's numbers are reproducible;
    - tensors print with 4 decimals and without scientific notation;
    - ``ignore_warnings``: silence Python warnings (deprecation notices from the libraries
      would otherwise interleave with the chapter's output);
    - matplotlib's rcParams get :data:`FIGURE_STYLE`;
    - ``show``: print the versions of torch and attnkit and the number of threads, the facts
      that decide whether a reader's timings can match the text.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from . import __version__

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_printoptions(precision=4, sci_mode=False)
    if ignore_warnings:
        warnings.filterwarnings("ignore")
    plt.rcParams.update(FIGURE_STYLE)
    if show:
        print("torch", torch.__version__, "| attnkit", __version__, "| threads", torch.get_num_threads())


@contextlib.contextmanager
def threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (None: leave the count as it is);
    restore the previous count afterwards, even if the block raises."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread():
    """Run the block on one thread (:func:`threads` ``(1)``).

    Timings on a small shared machine are steadier on one thread: with several, thread
    wake-ups add a floor of milliseconds to every call and hide the curves being measured.
    """
    return threads(1)


def triton_device() -> str:
    """Where Triton kernels run: ``"cuda"`` on a GPU, otherwise ``"cpu"`` under Triton's interpreter.

    Call it before ``import triton`` (at least before the first ``@triton.jit``): Triton reads
    ``TRITON_INTERPRET`` when it decorates a kernel. Without a GPU this sets
    ``TRITON_INTERPRET=1``, so every kernel runs on CPU tensors, one program instance after the
    other through NumPy: the same code, the same masks and bounds, only slow (keep sizes small).
    """
    import os
    import sys

    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return "cuda"
    os.environ["TRITON_INTERPRET"] = "1"
    language = sys.modules.get("triton.language")
    if language is not None and type(language.zeros).__name__ != "InterpretedFunction":
        raise RuntimeError(
            "Triton was imported before its interpreter was switched on, so its kernels cannot run "
            "on the CPU. Restart the kernel and call triton_device() (or import attnkit) before "
            "importing triton or torch._dynamo.")
    return "cpu"
