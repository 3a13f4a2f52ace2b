"""Per-assignment grading settings.

nbgrader's defaults suit short exercises; ours run small training loops and speed checks, so
each assignment sets its own per-cell time limit in ``SPECS``, the one table of
per-assignment settings: one entry for each assignment in ``solutions/`` (a test holds the two
equal). An assignment not in the table (``attnkit grade --source`` of another notebook) gets
``DEFAULT``. The ``attnkit grade --timeout`` option overrides the table for one run; the
notebook's wall-clock and CPU limits scale with it (``limits.Limits.for_cell_timeout``).

Grade cells score 0 when they write *anything* to stderr, so harmless noise (Python warnings,
tqdm progress bars) is stripped by nbgrader's ``IgnorePattern`` preprocessor before grades are
computed. ``IGNORE_STDERR`` is the list of regular expressions for that; an assignment can add
its own with ``AssignmentSpec.ignore_stderr``. Exceptions are ``error`` outputs, not stderr, so
stripping stderr can never turn a failing test into a passing one.
"""
from __future__ import annotations

from dataclasses import dataclass

# Matched with re.search in multi-line mode (``^`` is the start of any line).
IGNORE_STDERR: tuple[str, ...] = (
    r"^.*:\d+: \w*Warning: ",  # warnings.showwarning: "file.py:12: UserWarning: ..."
    r"^\[W\S* ",               # PyTorch C++ warnings: "[W1123 10:00:00.000 ...]"
    r"\d+%\|",                 # tqdm bar with a total: " 50%|#####     | 5/10 [...]"
    r"\d+it \[\d+:\d+",        # tqdm bar without a total: "10it [00:01, 9.90it/s]"
)


@dataclass(frozen=True)
class AssignmentSpec:
    """How to grade one assignment.

    timeout: seconds each cell may run before nbgrader interrupts it (nbgrader's default is 30).
    ignore_stderr: extra regular expressions of stderr output that must not zero a grade cell.
    forbidden: built-ins the assignment's text forbids in answers (names from
      ``attnkit.guard.dispatch.BUILTINS``, e.g. ``"torch.softmax"``). The grading guard refuses
      the operators they reach when student code calls them, by any name or route (aliases,
      ``Tensor.softmax``, ``nn.Softmax``, ``torch.ops.aten``...); the part loses its points and
      the submission is flagged. The library's own references are protected separately (their
      ``graded_in`` tags). A test checks that the text names each of them.
    watch_references: also watch every tensor operation for a protected reference's original
      code run around its wrapper (its ``__closure__``). That puts a Python call on every
      operator (about 10-60 µs each); assignments whose cells train models switch it off, and
      there the stack walk of the wrapper alone protects the references. With ``forbidden``
      non-empty the operators are watched anyway, and this costs one stack walk more.
    """

    timeout: int = 60
    ignore_stderr: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    watch_references: bool = True

    def ignore_pattern(self) -> str:
        """One regular expression for ``c.IgnorePattern.pattern``."""
        return "(?m)" + "|".join(f"(?:{p})" for p in IGNORE_STDERR + self.ignore_stderr)


DEFAULT = AssignmentSpec()

_SDPA = "torch.nn.functional.scaled_dot_product_attention"

SPECS: dict[str, AssignmentSpec] = {
    "a1_attention_basics": AssignmentSpec(timeout=120, forbidden=(
        _SDPA, "torch.softmax", "torch.log_softmax")),
    # torch.softmax is allowed from a2 on; SDPA would do a2's dense baseline's work
    "a2_sparse_patterns": AssignmentSpec(timeout=180, forbidden=(_SDPA,)),
    # the solution runs about 376,000 tensor operations (a1: 3,200; a4: 17,000): watching each
    # would add seconds per submission and weigh on the speed checks
    "a3_low_rank_and_kernels": AssignmentSpec(timeout=180, watch_references=False),
    "a4_content_based": AssignmentSpec(timeout=180),
    "a5_learnable_window": AssignmentSpec(timeout=300, watch_references=False),  # trains models
    # compiled FlexAttention (about 10-20 s per grade cell on a CPU) and Triton's interpreter
    "a6_gpu_kernels": AssignmentSpec(timeout=300),
    # two pretraining runs of the birth-place experiment (each about 60-130 s on one busy core)
    "a7_capstone": AssignmentSpec(timeout=360, watch_references=False),
}


def spec_for(name: str) -> AssignmentSpec:
    """The settings for ``name`` (``DEFAULT`` for an assignment not in the table)."""
    return SPECS.get(name, DEFAULT)


def _by_tag(name: str) -> AssignmentSpec:
    if name in SPECS:
        return SPECS[name]
    tag = name.split("_", 1)[0]
    return next((s for k, s in SPECS.items() if k.split("_", 1)[0] == tag), DEFAULT)


def forbidden_in(name: str) -> tuple[str, ...]:
    """The forbidden built-ins of assignment ``name`` (``"a1_attention_basics"`` or its tag ``"a1"``)."""
    return _by_tag(name).forbidden


def watches_references(name: str) -> bool:
    """Whether grading ``name`` watches every operator for references reached around their wrapper."""
    return _by_tag(name).watch_references
