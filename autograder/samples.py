"""Sample submissions: fake students that exercise the whole grading pipeline.

Each sample starts from the released student notebook (``assignments/<a>/<a>.ipynb``, exactly
what a student downloads) and fills its answer cells from a recipe:

- ``"solution"``: the code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in the source;
- ``("wrong", i)``: plausible wrong answer number ``i`` of ``solutions/<a>/wrong_answers.py``;
- ``("code", text)``: literal code (or, in a written answer's markdown cell, text);
- a cell not named keeps the released stub (nbgrader's "YOUR CODE HERE" placeholder).

``attnkit samples`` rewrites ``autograder/samples/<a>/<student>/<a>.ipynb``; a test checks that the
committed files are what the recipes produce, and ``test_autograder_e2e.py`` that they get the
scores in ``EXPECTED``.
"""
from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import nbformat

from .cells import grade_id
from .notebooks import ASSIGNMENTS, ROOT, read_source, solution_source, write_notebook

SAMPLES_DIR = ROOT / "autograder" / "samples"

_A1_ANSWERS = ["attention", "copy_scale", "copy_query", "average_query", "two_head_queries",
               "multi_head_attention", "causal", "attention_flops"]

RECIPES: dict[str, dict[str, dict[str, object]]] = {
    "a1_attention_basics": {
        # Everything right: full marks.
        "full": {cell: "solution" for cell in _A1_ANSWERS},
        # The notebook as released: zero.
        "blank": {},
        # Right on attention, copying, multi-head and FLOPs; one mistake each elsewhere.
        "partial": {
            "attention": "solution", "copy_scale": "solution", "copy_query": "solution",
            "average_query": ("wrong", 15), "two_head_queries": ("wrong", 17),
            "multi_head_attention": "solution", "causal": ("wrong", 21), "attention_flops": "solution",
        },
        # The first answer cell raises on import; the parts that do not need attention() still count.
        "crash_early": {
            **{cell: "solution" for cell in _A1_ANSWERS},
            "attention": ("code", "from my_helpers import stable_softmax  # a file that was not submitted\n\n"
                                  "def attention(q, k, v, mask=None):\n"
                                  "    weights = stable_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), mask)\n"
                                  "    return weights @ v\n"),
        },
    },
}

# A student who cheats: a wrong answer to part 3, then patches the checks and the testing
# functions to no-ops so that the wrong answer "passes". The grader restores them before every
# cell and flags the submission: it scores what its honest work earns (11 of 12).
RECIPES["a1_attention_basics"]["hostile"] = {
    **{cell: "solution" for cell in _A1_ANSWERS},
    "average_query": ("code", "def average_query(keys, a, b):\n"
                              "    return torch.zeros(keys.shape[1])  # not the answer\n\n"
                              "import torch.testing\nfrom attnkit import grading\n\n"
                              "def _always_fine(*args, **kwargs):\n    return None\n\n"
                              "for _name in ('check_tensor', 'check_shape', 'check_type'):\n"
                              "    setattr(grading, _name, _always_fine)\n"
                              "torch.testing.assert_close = _always_fine\n"),
}

_A2_ANSWERS = ["window_masks", "strided_global_masks", "sliding_window", "longformer", "bigbird",
               "bigbird_random", "xl_step"]

RECIPES["a2_sparse_patterns"] = {
    "full": {cell: "solution" for cell in _A2_ANSWERS},
    "blank": {},
    # Window masks, Longformer and the memory step right; the strided mask looks ahead, the
    # sliding window is dense-with-a-mask (right values: 2 of its 6 points), BigBird ignores the seed.
    "partial": {
        "window_masks": "solution", "strided_global_masks": ("wrong", 3), "sliding_window": ("wrong", 5),
        "longformer": "solution", "bigbird": ("wrong", 12), "xl_step": "solution",
        # a written answer that is half there (graded by hand: no file of manual grades, so the
        # demo shows a2's written answers still pending)
        "bigbird_random": ("code", "The random blocks let each token see a few far-away tokens, so "
                                   "it gets more context than the window alone gives it."),
    },
    # The first answer cell raises on import; the later parts do not use the masks and still count.
    "crash_early": {
        **{cell: "solution" for cell in _A2_ANSWERS},
        "window_masks": ("code", "from my_patterns import band  # a file that was not submitted\n\n"
                                 "def local_mask(window, causal=False):\n    return band(window, causal)\n\n"
                                 "def dilated_mask(window, dilation):\n    return band(window * dilation)\n"),
    },
}

_A3_ANSWERS = ["linformer", "linformer_queries", "flops_by_order", "linear_attention", "causal_linear",
               "linear_step", "positive_features", "orthogonal_features"]

RECIPES["a3_low_rank_and_kernels"] = {
    "full": {cell: "solution" for cell in _A3_ANSWERS},
    "blank": {},
    # Linformer, FLOPs, causal and recurrent forms right; linear attention in the quadratic order
    # (right values, too much memory, not faster), random features without -|x|²/2, i.i.d. rows.
    "partial": {
        "linformer": "solution", "flops_by_order": "solution", "linear_attention": ("wrong", 5),
        "causal_linear": "solution", "linear_step": "solution", "positive_features": ("wrong", 11),
        "orthogonal_features": ("wrong", 16),
        # half an answer; autograder/samples/a3_low_rank_and_kernels/manual_grades.csv gives it 0.5
        "linformer_queries": ("code", "If we projected the queries too, attention would return fewer "
                                      "rows than there are tokens."),
    },
    # The first answer cell raises on import; the parts that do not use Linformer still count.
    "crash_early": {
        **{cell: "solution" for cell in _A3_ANSWERS},
        "linformer": ("code", "from my_projections import project  # a file that was not submitted\n\n"
                              "def linformer_attention(q, k, v, E, F):\n    return project(q, k, v, E, F)\n"),
    },
}

_A4_ANSWERS = ["lsh_hash", "lsh_attention", "lsh_chunked", "routing", "sinkhorn_normalise", "synthesizer",
               "fourier_mixing", "rfa"]

RECIPES["a4_content_based"] = {
    "full": {cell: "solution" for cell in _A4_ANSWERS},
    "blank": {},
    # The hash, routing, the Synthesizer and RFA right; bucketed attention uses the first round only,
    # the chunked path is right in value through an N×N mask (too much memory, not faster),
    # Sinkhorn normalises in probability space (overflows), FNet transforms the tokens only.
    "partial": {
        "lsh_hash": "solution", "lsh_attention": ("wrong", 3), "lsh_chunked": ("wrong", 11),
        "routing": "solution", "sinkhorn_normalise": ("wrong", 20), "synthesizer": "solution",
        "fourier_mixing": ("wrong", 25), "rfa": "solution",
    },
    # The first answer cell raises on import; the parts that do not hash still count.
    "crash_early": {
        **{cell: "solution" for cell in _A4_ANSWERS},
        "lsh_hash": ("code", "from my_hashing import angular_buckets  # a file that was not submitted\n\n"
                             "def lsh_hash(x, rotations):\n    return angular_buckets(x, rotations)\n"),
    },
}

_A5_ANSWERS = ["bell_attention", "sigma_net", "window_from_sigma", "variable_window", "train_sigma"]

RECIPES["a5_learnable_window"] = {
    "full": {cell: "solution" for cell in _A5_ANSWERS},
    "blank": {},
    # Bell-curve attention (values and gradient) and the training run right; SigmaNet returns
    # (B, N, 1), the window is one too small, the variable windows are dense under a mask.
    "partial": {
        "bell_attention": "solution", "sigma_net": ("wrong", 7), "window_from_sigma": ("wrong", 9),
        "variable_window": ("wrong", 12), "train_sigma": "solution",
    },
    # The first answer cell raises on import; the parts that do not use bell_attention still count.
    "crash_early": {
        **{cell: "solution" for cell in _A5_ANSWERS},
        "bell_attention": ("code", "from my_curves import gaussian_bias  # a file that was not submitted\n\n"
                                   "def bell_attention(q, k, v, sigma, *, window, global_tokens=0, normalised=False):\n"
                                   "    return gaussian_bias(q, k, v, sigma, window, global_tokens, normalised)\n"),
    },
}

_A6_ANSWERS = ["causal_mod", "local_mod", "dilated_mod", "strided_mod", "fixed_mod", "longformer_mod",
               "bigbird_mod", "alibi_mod", "bell_mod", "softmax", "flash", "window"]

RECIPES["a6_gpu_kernels"] = {
    "full": {cell: "solution" for cell in _A6_ANSWERS},
    "blank": {},
    # The Sparse Transformer, BigBird, the score_mods and the softmax kernel right; the window is
    # off by one, Longformer forgets its global columns, the online softmax does not rescale the
    # accumulator, and the window kernel fakes its tile counter while it visits every tile.
    "partial": {
        **{cell: "solution" for cell in _A6_ANSWERS},
        "local_mod": ("wrong", 1), "longformer_mod": ("wrong", 7), "flash": ("wrong", 20), "window": ("wrong", 29),
    },
    # The first answer cell raises on import; the parts that do not use causal_mod still count.
    "crash_early": {
        **{cell: "solution" for cell in _A6_ANSWERS},
        "causal_mod": ("code", "from my_masks import lower_triangle  # a file that was not submitted\n\n"
                               "def causal_mod(b, h, q_idx, kv_idx):\n    return lower_triangle(q_idx, kv_idx)\n"),
    },
}

_A7_ANSWERS = ["span_corrupt", "finetune_example", "baseline", "evaluation", "experiment", "variant",
               "written_pretraining", "written_baseline_bias", "written_value_matrix", "written_variant"]

RECIPES["a7_capstone"] = {
    "full": {cell: "solution" for cell in _A7_ANSWERS},
    "blank": {},
    # Span corruption, the fine-tuning example, predict and the experiment right; ties in the
    # baseline go to the alphabetically first city, accuracy ignores case, the "variant" is dense.
    # One written answer, half there (manual_grades.csv gives it 1 of 2); the others left blank.
    "partial": {
        "span_corrupt": "solution", "finetune_example": "solution", "baseline": ("wrong", 8),
        "evaluation": ("wrong", 10), "experiment": "solution", "variant": ("wrong", 18),
        "written_pretraining": ("code", "Pretraining lets the model read the biographies of every person, "
                                        "so it has seen the held-out people before the questions."),
    },
    # The first answer cell raises on import: everything that pretrains (parts 5 and 6) fails with it;
    # the fine-tuning example, the baseline and the evaluation still count.
    "crash_early": {
        **{cell: "solution" for cell in _A7_ANSWERS},
        "span_corrupt": ("code", "from my_datasets import corrupt  # a file that was not submitted\n\n"
                                 "def span_corrupt(tokens, *, block, rng):\n    return corrupt(tokens, block, rng)\n"),
    },
}

# Expected total scores (out of the assignment's maximum) for each sample, after autograding: a
# written answer (graded by hand) counts 0 until a person scores it.
EXPECTED: dict[str, dict[str, float]] = {
    "a1_attention_basics": {"full": 12.0, "blank": 0.0, "partial": 7.0, "crash_early": 5.0,
                            "hostile": 11.0, "malformed": 12.0},
    "a2_sparse_patterns": {"full": 16.0, "blank": 0.0, "partial": 8.0, "crash_early": 14.0},
    "a3_low_rank_and_kernels": {"full": 15.0, "blank": 0.0, "partial": 7.0, "crash_early": 13.0},
    "a4_content_based": {"full": 16.0, "blank": 0.0, "partial": 7.0, "crash_early": 8.0},
    "a5_learnable_window": {"full": 12.0, "blank": 0.0, "partial": 6.0, "crash_early": 6.0},
    "a6_gpu_kernels": {"full": 19.0, "blank": 0.0, "partial": 9.0, "crash_early": 16.0},
    "a7_capstone": {"full": 14.0, "blank": 0.0, "partial": 10.0, "crash_early": 5.0},
}

# The totals once the samples' ``manual_grades.csv`` is entered (``attnkit demo`` does it; the
# same scores through ``attnkit manual --run DIR import``).
EXPECTED_WITH_MANUAL: dict[str, dict[str, float]] = {
    "a3_low_rank_and_kernels": {"full": 16.0, "blank": 0.0, "partial": 7.5, "crash_early": 14.0},
    "a7_capstone": {"full": 20.0, "blank": 0.0, "partial": 11.0, "crash_early": 11.0},
}

_SOLUTION_RE = re.compile(r"^[ \t]*### BEGIN SOLUTION[ \t]*\n(.*?)^[ \t]*### END SOLUTION[ \t]*\n?",
                          re.MULTILINE | re.DOTALL)


def _strip_markers(source: str) -> str:
    """The source cell as a student would have written it: solution markers removed."""
    return _SOLUTION_RE.sub(lambda m: m.group(1), source)


def load_wrong_answers(name: str) -> list[dict]:
    """``WRONG_ANSWERS`` from ``solutions/<name>/wrong_answers.py`` ([] when there is none)."""
    path = solution_source(name).parent / "wrong_answers.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"wrong_answers_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WRONG_ANSWERS


def build_sample(name: str, recipe: dict[str, object]) -> nbformat.NotebookNode:
    """The released notebook of assignment ``name`` with answer cells filled by ``recipe``."""
    released = nbformat.read(str(ASSIGNMENTS / name / f"{name}.ipynb"), as_version=4)
    solutions = {grade_id(c): c.source for c in read_source(solution_source(name)).cells}
    wrong = load_wrong_answers(name) if any(isinstance(v, tuple) and v[0] == "wrong"
                                        for v in recipe.values()) else []
    nb = copy.deepcopy(released)
    cells = {grade_id(c): c for c in nb.cells if grade_id(c)}
    for cell_id, how in recipe.items():
        if cell_id not in cells:
            raise KeyError(f"{name}: no answer cell {cell_id!r} in the released notebook")
        if how == "solution":
            text = _strip_markers(solutions[cell_id])
        elif how[0] == "wrong":
            entry = wrong[how[1]]
            if entry["cell"] != cell_id:
                raise ValueError(f"wrong answer {how[1]} is for cell {entry['cell']!r}, not {cell_id!r}")
            text = entry["source"].strip() + "\n"
        elif how[0] == "code":
            text = how[1]
        else:
            raise ValueError(f"unknown recipe entry {how!r}")
        cells[cell_id].source = text.rstrip("\n")
    return nb


def sample_path(name: str, student: str) -> Path:
    return SAMPLES_DIR / name / student / f"{name}.ipynb"


def write_samples(names: list[str] | None = None) -> list[Path]:
    """Rewrite the committed sample submissions from their recipes (and the Canvas sample from
    the a1 samples)."""
    written = []
    for name in names or sorted(RECIPES):
        for student, recipe in RECIPES[name].items():
            written.append(write_notebook(build_sample(name, recipe), sample_path(name, student)))
    if CANVAS["assignment"] in (names or RECIPES):
        written += write_canvas_sample()
    return written


# ---------------------------------------------------------------- an LMS round trip

# A Canvas "Download Submissions" zip of a1 (file names as Canvas writes them, see lms.py) and
# the class roster: O'Brien hands in the solution on time; Ångström uploads three times, late
# (the latest is the solution); Lee hands in the partial answers; Nguyen, on the roster, hands
# in nothing; a README.txt in the zip is no student's. ``attnkit demo`` grades it with the due
# date and a 10 %/day late penalty and writes the Canvas import CSV; test_lms_grading.py checks it.
CANVAS = {
    "assignment": "a1_attention_basics",
    "zip": SAMPLES_DIR / "lms" / "canvas_a1_attention_basics.zip",
    "roster": SAMPLES_DIR / "lms" / "canvas_roster.csv",
    "due": "2026-11-20 17:00:00 UTC",
    "late_penalty": "10%/day",
    "title": "A1: attention basics",
    "assignment_id": "3301",
    "files": [  # (name in the zip, the a1 sample whose notebook it is; None: a stray file)
        ("obrienzoë_4821_99012_a1_attention_basics.ipynb", "full"),
        ("ångströmzoë_LATE_4822_99020_a1_attention_basics.ipynb", "blank"),
        ("ångströmzoë_LATE_4822_99021_a1_attention_basics-1.ipynb", "partial"),
        ("ångströmzoë_LATE_4822_99022_a1_attention_basics-2.ipynb", "full"),
        ("leejordan_4823_99030_a1_attention_basics.ipynb", "partial"),
        ("README.txt", None),
    ],
    "roster_csv": ("Student,ID,SIS User ID,SIS Login ID,Section,email\n"
                   "\"O'Brien, Zoë\",4821,S1001,zobrien,Section A,zoe.obrien@example.edu\n"
                   "\"Ångström, Zoë\",4822,S1002,zangstrom,Section A,zoe.angstrom@example.edu\n"
                   "\"Lee, Jordan\",4823,S1003,jlee,Section B,jordan.lee@example.edu\n"
                   "\"Nguyen, Minh\",4824,S1004,mnguyen,Section B,minh.nguyen@example.edu\n"),
    # kit id -> (score after the late penalty, status): 10 % off one day late
    "expected": {"obrienzoe_4821": (12.0, "graded"), "angstromzoe_4822": (10.8, "graded"),
                 "leejordan_4823": (7.0, "graded"), "nguyenminh_4824": (0.0, "missing")},
}
_ZIP_TIME = (2026, 11, 21, 9, 0, 0)  # Canvas stamps every member with the download time


def canvas_members() -> dict[str, bytes]:
    """The members of the Canvas sample zip: name -> bytes (the a1 samples' notebooks)."""
    name = CANVAS["assignment"]
    return {member: (sample_path(name, student).read_bytes() if student
                     else b"Downloaded from Canvas: submissions of A1.\n")
            for member, student in CANVAS["files"]}


def write_canvas_sample() -> list[Path]:
    """Write the Canvas sample zip and its roster (after the a1 samples they are built from)."""
    import zipfile

    path = CANVAS["zip"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in canvas_members().items():
            zf.writestr(zipfile.ZipInfo(member, _ZIP_TIME), data, zipfile.ZIP_DEFLATED)
    CANVAS["roster"].write_text(CANVAS["roster_csv"], encoding="utf-8")
    return [path, CANVAS["roster"]]
