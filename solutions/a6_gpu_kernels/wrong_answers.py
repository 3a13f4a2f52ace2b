"""Plausible wrong answers to assignment 6, one mistake each.

``tests/test_grade_cells.py`` puts each one into the solution notebook in place of the answer
cell ``cell`` and checks that every grade cell in ``fails`` then fails.

The Triton answers (kernel and launcher in one cell) are the solution's cell with one edit,
applied by :func:`_mutate` to the text of ``a6_gpu_kernels.py``: each edit must match exactly
once, so a wrong answer cannot silently turn back into the solution when the solution changes.
"""
import re
from pathlib import Path

_SOURCE = (Path(__file__).resolve().parent / "a6_gpu_kernels.py").read_text(encoding="utf-8")
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def _cell(grade_id: str) -> str:
    """The solution's answer cell ``grade_id``, as a student would write it (no solution markers)."""
    match = re.search(r'^# %% nbgrader=\{[^\n]*"grade_id": "' + re.escape(grade_id) + r'"[^\n]*\n(.*?)(?=^# %%)',
                      _SOURCE, re.MULTILINE | re.DOTALL)
    if match is None:
        raise KeyError(f"no answer cell {grade_id!r} in a6_gpu_kernels.py")
    lines = [line for line in match.group(1).splitlines() if line.strip() not in _MARKERS]
    return "\n".join(lines).strip() + "\n"


def _mutate(grade_id: str, *edits: tuple[str, str]) -> str:
    """The solution's cell ``grade_id`` with each (old, new) edit applied; old must occur once."""
    text = _cell(grade_id)
    for old, new in edits:
        if text.count(old) != 1:
            raise ValueError(f"{grade_id}: the edit target occurs {text.count(old)} times, not once: {old!r}")
        text = text.replace(old, new)
    return text


WRONG_ANSWERS = [
    # ---------------------------------------------------------------- part 1: causal, window, dilated
    {
        "cell": "causal_mod",
        "fails": ["test_window_mods"],
        "why": "strictly causal, j < i: a query never sees its own key (the first row sees nothing)",
        "source": '''
def causal_mod(b, h, q_idx, kv_idx):
    return kv_idx < q_idx
''',
    },
    {
        "cell": "local_mod",
        "fails": ["test_window_mods"],
        "why": "off-by-one band: |i - j| < w instead of <= w",
        "source": '''
def local_mod(window, causal=False):
    w = torch.tensor(window, device=DEVICE)
    lowest = torch.tensor(0 if causal else -window, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() < w) & (d >= lowest)
    return mask_mod
''',
    },
    {
        "cell": "local_mod",
        "fails": ["test_window_mods"],
        "why": "ignores causal=True: the window looks ahead",
        "source": '''
def local_mod(window, causal=False):
    w = torch.tensor(window, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= w
    return mask_mod
''',
    },
    {
        "cell": "local_mod",
        "fails": ["test_window_mods"],
        "why": "right mask, but the window is captured as a Python int: every new window compiles again",
        "source": '''
def local_mod(window, causal=False):
    lowest = 0 if causal else -window

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= window) & (d >= lowest)
    return mask_mod
''',
    },
    {
        "cell": "dilated_mod",
        "fails": ["test_window_mods"],
        "why": "reach w instead of w * dilation: only w / dilation keys on each side",
        "source": '''
def dilated_mod(window, dilation):
    w = torch.tensor(window, device=DEVICE)
    step = torch.tensor(dilation, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= w) & (d % step == 0)
    return mask_mod
''',
    },
    # ---------------------------------------------------------------- part 2: Sparse Transformer
    {
        "cell": "strided_mod",
        "fails": ["test_sparse_transformer_mods"],
        "why": "forgets causality: |i - j| < s or |i - j| % s == 0, looking ahead",
        "source": '''
def strided_mod(stride):
    s = torch.tensor(stride, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        d = (q_idx - kv_idx).abs()
        return (d < s) | (d % s == 0)
    return mask_mod
''',
    },
    {
        "cell": "fixed_mod",
        "fails": ["test_sparse_transformer_mods"],
        "why": "summary keys are the first `summary` of each block instead of the last",
        "source": '''
def fixed_mod(stride, summary=1):
    s = torch.tensor(stride, device=DEVICE)
    c = torch.tensor(summary, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        same_block = kv_idx // s == q_idx // s
        return (kv_idx <= q_idx) & (same_block | (kv_idx % s < c))
    return mask_mod
''',
    },
    # ---------------------------------------------------------------- part 3: Longformer, BigBird
    {
        "cell": "longformer_mod",
        "fails": ["test_longformer_bigbird"],
        "why": "forgets the global columns: global queries see all, but no query sees the global keys",
        "source": '''
def longformer_mod(window, global_tokens):
    w = torch.tensor(window, device=DEVICE)
    g = torch.tensor(global_tokens, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        return ((q_idx - kv_idx).abs() <= w) | (q_idx < g)
    return mask_mod
''',
    },
    {
        "cell": "longformer_mod",
        "fails": ["test_longformer_bigbird"],
        "why": "forgets the global rows: every query sees the global keys, but global queries only their window",
        "source": '''
def longformer_mod(window, global_tokens):
    w = torch.tensor(window, device=DEVICE)
    g = torch.tensor(global_tokens, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        return ((q_idx - kv_idx).abs() <= w) | (kv_idx < g)
    return mask_mod
''',
    },
    {
        "cell": "bigbird_mod",
        "fails": ["test_longformer_bigbird"],
        "why": "looks up the random blocks by position, random_blocks[i, j], instead of by block",
        "source": '''
def bigbird_mod(block, window_blocks, global_blocks, random_blocks):
    size = torch.tensor(block, device=DEVICE)
    wb = torch.tensor(window_blocks, device=DEVICE)
    gb = torch.tensor(global_blocks, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        qb, kb = q_idx // size, kv_idx // size
        return ((qb - kb).abs() <= wb) | (qb < gb) | (kb < gb) | random_blocks[q_idx, kv_idx]
    return mask_mod
''',
    },
    {
        "cell": "bigbird_mod",
        "fails": ["test_longformer_bigbird"],
        "why": "global blocks as rows only: the global key blocks are not seen by the other queries",
        "source": '''
def bigbird_mod(block, window_blocks, global_blocks, random_blocks):
    size = torch.tensor(block, device=DEVICE)
    wb = torch.tensor(window_blocks, device=DEVICE)
    gb = torch.tensor(global_blocks, device=DEVICE)

    def mask_mod(b, h, q_idx, kv_idx):
        qb, kb = q_idx // size, kv_idx // size
        return ((qb - kb).abs() <= wb) | (qb < gb) | random_blocks[qb, kb]
    return mask_mod
''',
    },
    # ---------------------------------------------------------------- part 4: score_mods
    {
        "cell": "alibi_mod",
        "fails": ["test_score_mods"],
        "why": "wrong sign: m_h (i - j) rewards distant keys instead of penalising them",
        "source": '''
def alibi_mod(H):
    slopes = 2.0 ** (-8.0 * torch.arange(1, H + 1, device=DEVICE) / H)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (q_idx - kv_idx)
    return score_mod
''',
    },
    {
        "cell": "alibi_mod",
        "fails": ["test_score_mods"],
        "why": "slopes per head off by one: 2^(-8h/H) from h = 0, so head 0 gets slope 1",
        "source": '''
def alibi_mod(H):
    slopes = 2.0 ** (-8.0 * torch.arange(H, device=DEVICE) / H)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return score_mod
''',
    },
    {
        "cell": "bell_mod",
        "fails": ["test_score_mods"],
        "why": "not in log space: multiplies the score by the curve instead of adding its log",
        "source": '''
def bell_mod(sigma, window):
    s = torch.tensor(sigma, device=DEVICE)
    w = torch.tensor(window, device=DEVICE)

    def score_mod(score, b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return torch.where(d.abs() <= w, score * torch.exp(-0.5 * (d / s) ** 2), -math.inf)
    return score_mod
''',
    },
    {
        "cell": "bell_mod",
        "fails": ["test_score_mods"],
        "why": "forgets the window: the bias applies to every key, none is masked",
        "source": '''
def bell_mod(sigma, window):
    s = torch.tensor(sigma, device=DEVICE)

    def score_mod(score, b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return score - 0.5 * (d / s) ** 2
    return score_mod
''',
    },
    {
        "cell": "bell_mod",
        "fails": ["test_score_mods"],
        "why": "divides the squared distance by sigma, not sigma squared",
        "source": '''
def bell_mod(sigma, window):
    s = torch.tensor(sigma, device=DEVICE)
    w = torch.tensor(window, device=DEVICE)

    def score_mod(score, b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return torch.where(d.abs() <= w, score - 0.5 * d ** 2 / s, -math.inf)
    return score_mod
''',
    },
    # ---------------------------------------------------------------- part 5: softmax kernel
    {
        "cell": "softmax",
        "fails": ["test_softmax"],
        "why": "no max subtraction: exp() overflows for scores in the thousands (inf / inf = NaN)",
        "source": _mutate("softmax", ("e = tl.exp(x - tl.max(x, axis=0))", "e = tl.exp(x)")),
    },
    {
        "cell": "softmax",
        "fails": ["test_softmax"],
        "why": "no load mask: the last block reads past the row (the next row, or past the tensor)",
        "source": _mutate("softmax", ("x = tl.load(x_ptr + row * n_cols + cols, mask=inside, other=float(\"-inf\"))",
                                      "x = tl.load(x_ptr + row * n_cols + cols)")),
    },
    {
        "cell": "softmax",
        "fails": ["test_softmax"],
        "why": "pads with 0 instead of -inf: every padding column adds exp(0 - max) to the sum",
        "source": _mutate("softmax", ("mask=inside, other=float(\"-inf\"))", "mask=inside, other=0.0)")),
    },
    # ---------------------------------------------------------------- part 6: FlashAttention forward
    {
        "cell": "flash",
        "fails": ["test_flash_attention"],
        "why": "causal flash that masks j < i: the diagonal is missing (and row 0 sees nothing)",
        "source": _mutate("flash", ("keep = keep & (cols[None, :] <= rows[:, None])",
                                    "keep = keep & (cols[None, :] < rows[:, None])")),
    },
    {
        "cell": "flash",
        "fails": ["test_flash_attention"],
        "why": "online softmax that does not rescale the accumulator by alpha when the max grows",
        "source": _mutate("flash", ("acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)",
                                    "acc = acc + tl.dot(p.to(v.dtype), v)")),
    },
    {
        "cell": "flash",
        "fails": ["test_flash_attention"],
        "why": "rescales the accumulator but not the running sum l",
        "source": _mutate("flash", ("l_i = l_i * alpha + tl.sum(p, axis=1)", "l_i = l_i + tl.sum(p, axis=1)")),
    },
    {
        "cell": "flash",
        "fails": ["test_flash_attention"],
        "why": "no load mask on K and V: the last, ragged tile reads past the end (NaN there)",
        "source": _mutate("flash",
                          ("k = tl.load(K + bh * M * D + cols[:, None] * D + dims[None, :], mask=cols[:, None] < M, other=0.0)",
                           "k = tl.load(K + bh * M * D + cols[:, None] * D + dims[None, :])"),
                          ("v = tl.load(V + bh * M * D + cols[:, None] * D + dims[None, :], mask=cols[:, None] < M, other=0.0)",
                           "v = tl.load(V + bh * M * D + cols[:, None] * D + dims[None, :])")),
    },
    {
        "cell": "flash",
        "fails": ["test_flash_attention"],
        "why": "causal loop stops before the diagonal tile: keys of the query block itself are never seen",
        "source": _mutate("flash", ("hi = tl.minimum(M, (pid_m + 1) * BLOCK_M)", "hi = tl.minimum(M, pid_m * BLOCK_M)")),
    },
    {
        "cell": "flash",
        "fails": ["test_flash_attention"],
        "why": "no running max: p = exp(s) overflows for large scores",
        "source": _mutate("flash", ("alpha = tl.exp(m_i - m_new)", "alpha = tl.exp(m_i - m_i)"),
                          ("p = tl.exp(s - m_new[:, None])", "p = tl.exp(s)")),
    },
    # ---------------------------------------------------------------- part 7: the window kernel
    {
        "cell": "window",
        "fails": ["test_window_attention", "test_window_work"],
        "why": "visits every key tile (right values, wrong tile count: no work saved)",
        "source": _mutate("window", ("for start in range(lo, hi, BLOCK_N):", "for start in range(0, N, BLOCK_N):")),
    },
    {
        "cell": "window",
        "fails": ["test_window_attention", "test_window_work"],
        "why": "off-by-one band: |i - j| < w",
        "source": _mutate("window", ("keep = (cols[None, :] < N) & (d <= window) & (d >= -window)",
                                     "keep = (cols[None, :] < N) & (d < window) & (d > -window)")),
    },
    {
        "cell": "window",
        "fails": ["test_window_attention"],
        "why": "starts at key m0 - w itself, not at its tile: right values, tiles off the grid (counts differ)",
        "source": _mutate("window", ("lo = (tl.maximum(m0 - window, 0) // BLOCK_N) * BLOCK_N",
                                     "lo = tl.maximum(m0 - window, 0)")),
    },
    {
        "cell": "window",
        "fails": ["test_window_attention", "test_window_work"],
        "why": "one tile too many after the band (masked, so the values are right)",
        "source": _mutate("window", ("hi = tl.minimum(m0 + BLOCK_M + window, N)",
                                     "hi = tl.minimum(m0 + BLOCK_M + window + BLOCK_N, N)")),
    },
    {
        "cell": "window",
        "fails": ["test_window_work"],
        "why": "writes the right tile counts but loops over every tile: caught by the NaN outside the band",
        "source": _mutate("window", ("for start in range(lo, hi, BLOCK_N):", "for start in range(0, N, BLOCK_N):"),
                          ("tl.store(TILES + bh * NQ + pid_m, visited)",
                           "tl.store(TILES + bh * NQ + pid_m, (hi - lo + BLOCK_N - 1) // BLOCK_N)")),
    },
    {
        "cell": "window",
        "fails": ["test_window_attention"],
        "why": "ignores causal=True: the causal window looks ahead",
        "source": _mutate("window", ("keep = keep & (d >= 0)", "keep = keep"),
                          ("hi = tl.minimum(hi, m0 + BLOCK_M)", "hi = hi")),
    },
    {
        "cell": "window",
        "fails": ["test_window_attention"],
        "why": "no load mask on K and V: the last, ragged tile reads past the end (NaN there)",
        "source": _mutate("window",
                          ("k = tl.load(K + base + cols[:, None] * D + dims[None, :], mask=cols[:, None] < N, other=0.0)",
                           "k = tl.load(K + base + cols[:, None] * D + dims[None, :])"),
                          ("v = tl.load(V + base + cols[:, None] * D + dims[None, :], mask=cols[:, None] < N, other=0.0)",
                           "v = tl.load(V + base + cols[:, None] * D + dims[None, :])")),
    },
]
