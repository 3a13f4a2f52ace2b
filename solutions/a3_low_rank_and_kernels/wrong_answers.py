"""Plausible wrong answers to assignment 3, one mistake each.

``tests/test_grade_cells.py`` puts each one into the solution notebook in place of the answer
cell ``cell`` and checks that every grade cell in ``fails`` then fails.
"""

WRONG_ANSWERS = [
    {
        "cell": "linformer",
        "fails": ["test_linformer"],
        "why": "projects the queries too (k outputs instead of N)",
        "source": '''
def linformer_attention(q, k, v, E, F):
    scores = (E @ q) @ (E @ k).transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ (F @ v)
''',
    },
    {
        "cell": "linformer",
        "fails": ["test_linformer"],
        "why": "uses E for the values as well as the keys",
        "source": '''
def linformer_attention(q, k, v, E, F):
    scores = q @ (E @ k).transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ (E @ v)
''',
    },
    {
        "cell": "flops_by_order",
        "fails": ["test_flops_by_order"],
        "why": "counts multiply-adds, not FLOPs (forgets the factor 2)",
        "source": '''
def flops_by_order(N, D, Dv):
    return N * N * D + N * N * Dv, D * N * Dv + N * D * Dv
''',
    },
    {
        "cell": "flops_by_order",
        "fails": ["test_flops_by_order"],
        "why": "assumes Dv = D",
        "source": '''
def flops_by_order(N, D, Dv):
    return 4 * N * N * D, 4 * N * D * D
''',
    },
    {
        "cell": "linear_attention",
        "fails": ["test_linear_attention", "test_linear_speed"],
        "why": "forgets the normaliser phi(q)·z",
        "source": '''
def elu_feature(x):
    return F.elu(x) + 1


def linear_attention(q, k, v):
    fq, fk = elu_feature(q), elu_feature(k)
    return fq @ (fk.transpose(-2, -1) @ v)
''',
    },
    {
        "cell": "linear_attention",
        "fails": ["test_linear_attention", "test_linear_speed"],
        "why": "right values in the quadratic order: builds the N×N matrix phi(Q) phi(K)^T",
        "source": '''
def elu_feature(x):
    return F.elu(x) + 1


def linear_attention(q, k, v):
    A = elu_feature(q) @ elu_feature(k).transpose(-2, -1)
    return (A / A.sum(dim=-1, keepdim=True)) @ v
''',
    },
    {
        "cell": "causal_linear",
        "fails": ["test_causal_linear"],
        "why": "non-causal sums: uses every key for every query",
        "source": '''
def causal_linear_attention(q, k, v):
    fq, fk = elu_feature(q), elu_feature(k)
    S = fk.transpose(-2, -1) @ v
    z = fk.sum(dim=-2)
    return (fq @ S) / (fq @ z.unsqueeze(-1))
''',
    },
    {
        "cell": "causal_linear",
        "fails": ["test_causal_linear"],
        "why": "right values with a masked N×N matrix (quadratic memory)",
        "source": '''
def causal_linear_attention(q, k, v):
    N = q.shape[-2]
    A = (elu_feature(q) @ elu_feature(k).transpose(-2, -1)) * torch.ones(N, N, dtype=q.dtype).tril()
    return (A / A.sum(dim=-1, keepdim=True)) @ v
''',
    },
    {
        "cell": "causal_linear",
        "fails": ["test_causal_linear"],
        "why": "off by one: the prefix sums exclude the current token (j < i)",
        "source": '''
def causal_linear_attention(q, k, v):
    fq, fk = elu_feature(q), elu_feature(k)
    S = (fk.unsqueeze(-1) * v.unsqueeze(-2)).cumsum(dim=-3) - fk.unsqueeze(-1) * v.unsqueeze(-2)
    z = fk.cumsum(dim=-2) - fk + 1e-9
    num = (fq.unsqueeze(-2) @ S).squeeze(-2)
    return num / (fq * z).sum(dim=-1, keepdim=True)
''',
    },
    {
        "cell": "linear_step",
        "fails": ["test_linear_step"],
        "why": "updates the state after computing the output (token t does not see itself)",
        "source": '''
def linear_step(state, q_t, k_t, v_t):
    fq, fk = elu_feature(q_t), elu_feature(k_t)
    if state is None:
        S = torch.zeros(*fk.shape, v_t.shape[-1], dtype=v_t.dtype)
        z = torch.full_like(fk, 1e-9)
    else:
        S, z = state
    out = (fq.unsqueeze(-2) @ S).squeeze(-2) / (fq * z).sum(-1, keepdim=True)
    return out, (S + fk.unsqueeze(-1) * v_t.unsqueeze(-2), z + fk)
''',
    },
    {
        "cell": "linear_step",
        "fails": ["test_linear_step"],
        "why": "forgets the state: every token only sees itself",
        "source": '''
def linear_step(state, q_t, k_t, v_t):
    fq, fk = elu_feature(q_t), elu_feature(k_t)
    S = fk.unsqueeze(-1) * v_t.unsqueeze(-2)
    z = fk
    out = (fq.unsqueeze(-2) @ S).squeeze(-2) / (fq * z).sum(-1, keepdim=True)
    return out, (S, z)
''',
    },
    {
        "cell": "positive_features",
        "fails": ["test_positive_features"],
        "why": "misses the -|x|²/2 term: estimates exp(q·k + |q|²/2 + |k|²/2)",
        "source": '''
def positive_random_features(x, w):
    return torch.exp(x @ w.T) / math.sqrt(w.shape[0])
''',
    },
    {
        "cell": "positive_features",
        "fails": ["test_positive_features"],
        "why": "features not divided by sqrt(m): the estimate is m times too large",
        "source": '''
def positive_random_features(x, w):
    return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2)
''',
    },
    {
        "cell": "positive_features",
        "fails": ["test_positive_features"],
        "why": "trigonometric features (not positive)",
        "source": '''
def positive_random_features(x, w):
    m = w.shape[0]
    proj = x @ w.T
    scale = torch.exp((x * x).sum(-1, keepdim=True) / 2) / math.sqrt(m)
    return scale * torch.cos(proj)
''',
    },
    {
        "cell": "orthogonal_features",
        "fails": ["test_orthogonal_features"],
        "why": "orthonormal rows without the chi_D lengths (every row has norm 1)",
        "source": '''
def orthogonal_gaussian(m, D, gen):
    blocks = []
    for _ in range(math.ceil(m / D)):
        Qm, _ = torch.linalg.qr(torch.randn(D, D, generator=gen))
        blocks.append(Qm.T)
    return torch.cat(blocks)[:m]
''',
    },
    {
        "cell": "orthogonal_features",
        "fails": ["test_orthogonal_features"],
        "why": "every row rescaled to sqrt(D) instead of a chi_D draw",
        "source": '''
def orthogonal_gaussian(m, D, gen):
    blocks = []
    for _ in range(math.ceil(m / D)):
        Qm, _ = torch.linalg.qr(torch.randn(D, D, generator=gen))
        blocks.append(Qm.T * math.sqrt(D))
    return torch.cat(blocks)[:m]
''',
    },
    {
        "cell": "orthogonal_features",
        "fails": ["test_orthogonal_features"],
        "why": "i.i.d. Gaussian rows (no orthogonalisation)",
        "source": '''
def orthogonal_gaussian(m, D, gen):
    return torch.randn(m, D, generator=gen)
''',
    },
]
