"""Plausible wrong answers to assignment 1, one mistake each.

``tests/test_grade_cells.py`` puts each one into the solution notebook in place of the answer
cell ``cell`` and checks that every grade cell in ``fails`` then fails: a grade cell that a
plausible wrong answer passes is a defect. ``autograder/samples.py`` also uses some of them to
build the "partly correct" sample submission.
"""

WRONG_ANSWERS = [
    {
        "cell": "attention",
        "fails": ["test_attention"],
        "why": "forgets to divide the scores by sqrt(D)",
        "source": '''
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return weights / weights.sum(dim=-1, keepdim=True) @ v
''',
    },
    {
        "cell": "attention",
        "fails": ["test_attention"],
        "why": "exponentiates without subtracting the row maximum (overflows for large scores)",
        "source": '''
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.exp()
    return weights / weights.sum(dim=-1, keepdim=True) @ v
''',
    },
    {
        "cell": "attention",
        "fails": ["test_attention"],
        "why": "ignores the mask",
        "source": '''
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return weights / weights.sum(dim=-1, keepdim=True) @ v
''',
    },
    {
        "cell": "attention",
        "fails": ["test_attention"],
        "why": "normalises over the queries (dim=-2) instead of the keys",
        "source": '''
def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = (scores - scores.amax(dim=-2, keepdim=True)).exp()
    return weights / weights.sum(dim=-2, keepdim=True) @ v
''',
    },
    {
        "cell": "copy_scale",
        "fails": ["test_copy_scale"],
        "why": "counts all N keys in the denominator (N instead of N - 1): safe, but not the smallest",
        "source": '''
def copy_scale(N, gap, p):
    return math.log(N * p / (1 - p)) / gap
''',
    },
    {
        "cell": "copy_scale",
        "fails": ["test_copy_scale"],
        "why": "uses log(N) / gap, ignoring p",
        "source": '''
def copy_scale(N, gap, p):
    return math.log(N) / gap
''',
    },
    {
        "cell": "copy_scale",
        "fails": ["test_copy_scale"],
        "why": "forgets to divide by the gap (solves for n * gap instead of n)",
        "source": '''
def copy_scale(N, gap, p):
    return math.log((N - 1) * p / (1 - p))
''',
    },
    {
        "cell": "copy_scale",
        "fails": ["test_copy_scale"],
        "why": "returns a huge constant, as the old answer n = 1e4 did: it copies, but is nowhere near the smallest",
        "source": '''
def copy_scale(N, gap, p):
    return 1e4
''',
    },
    {
        "cell": "copy_scale",
        "fails": ["test_copy_scale"],
        "why": "ignores the number of keys (the two-key answer log(p / (1 - p)) / gap)",
        "source": '''
def copy_scale(N, gap, p):
    return math.log(p / (1 - p)) / gap
''',
    },
    {
        "cell": "copy_scale",
        "fails": ["test_copy_scale"],
        "why": "solves the looser bound alpha_j >= 1 - (N - 1) exp(-n gap): safe, but not the smallest",
        "source": '''
def copy_scale(N, gap, p):
    return math.log((N - 1) / (1 - p)) / gap
''',
    },
    {
        "cell": "copy_query",
        "fails": ["test_copy_query"],
        "why": "uses the key itself as the query (no scale)",
        "source": '''
def copy_query(keys, j, p=0.99):
    return keys[j].clone()
''',
    },
    {
        "cell": "copy_query",
        "fails": ["test_copy_query"],
        "why": "keeps a huge constant scale instead of the one the guarantee needs",
        "source": '''
def copy_query(keys, j, p=0.99):
    return 1e4 * keys[j]
''',
    },
    {
        "cell": "copy_query",
        "fails": ["test_copy_query"],
        "why": "takes the largest cosine over all keys, key j included, so the gap is 0",
        "source": '''
def copy_query(keys, j, p=0.99):
    gap = 1.0 - (keys @ keys[j]).max().item()
    return copy_scale(keys.shape[0], gap, p) * keys[j]
''',
    },
    {
        "cell": "copy_query",
        "fails": ["test_copy_query"],
        "why": "measures the gap to the farthest key instead of the closest one (too small a scale)",
        "source": '''
def copy_query(keys, j, p=0.99):
    cos = keys @ keys[j]
    others = torch.cat([cos[:j], cos[j + 1:]])
    return copy_scale(keys.shape[0], 1.0 - others.min().item(), p) * keys[j]
''',
    },
    {
        "cell": "copy_query",
        "fails": ["test_copy_query"],
        "why": "ignores p and always guarantees 0.99",
        "source": '''
def copy_query(keys, j, p=0.99):
    cos = keys @ keys[j]
    others = torch.cat([cos[:j], cos[j + 1:]])
    return copy_scale(keys.shape[0], 1.0 - others.max().item(), 0.99) * keys[j]
''',
    },
    {
        "cell": "average_query",
        "fails": ["test_average_query"],
        "why": "points the query at key a only",
        "source": '''
def average_query(keys, a, b):
    return 50.0 * keys[a]
''',
    },
    {
        "cell": "average_query",
        "fails": ["test_average_query"],
        "why": "sums the two keys without a large factor",
        "source": '''
def average_query(keys, a, b):
    return keys[a] + keys[b]
''',
    },
    {
        "cell": "two_head_queries",
        "fails": ["test_two_head_queries"],
        "why": "gives both heads the single-head query n(mu_a + mu_b)",
        "source": '''
def two_head_queries(mu, a, b):
    q = 50.0 * (mu[a] + mu[b])
    return q, q
''',
    },
    {
        "cell": "two_head_queries",
        "fails": ["test_two_head_queries"],
        "why": "aims both heads at the two keys but without a large factor",
        "source": '''
def two_head_queries(mu, a, b):
    return mu[a], mu[b]
''',
    },
    {
        "cell": "multi_head_attention",
        "fails": ["test_multi_head_attention"],
        "why": "splits heads with a view to (B, H, N, D) instead of view + transpose",
        "source": '''
def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    B, N, C = x.shape
    D = C // n_heads
    split = lambda t: t.reshape(B, n_heads, N, D)
    out = attention(split(x @ w_q), split(x @ w_k), split(x @ w_v), mask=mask)
    return out.reshape(B, N, C) @ w_o
''',
    },
    {
        "cell": "multi_head_attention",
        "fails": ["test_multi_head_attention"],
        "why": "forgets the output projection w_o",
        "source": '''
def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads, mask=None):
    B, N, C = x.shape
    D = C // n_heads
    split = lambda t: t.view(B, N, n_heads, D).transpose(1, 2)
    out = attention(split(x @ w_q), split(x @ w_k), split(x @ w_v), mask=mask)
    return out.transpose(1, 2).reshape(B, N, C)
''',
    },
    {
        "cell": "causal",
        "fails": ["test_causal"],
        "why": "excludes the diagonal (a token cannot see itself)",
        "source": '''
def causal_mask(N):
    return torch.ones(N, N, dtype=torch.bool).tril(diagonal=-1)


def causal_attention(q, k, v):
    return attention(q, k, v, mask=causal_mask(q.shape[-2]))
''',
    },
    {
        "cell": "causal",
        "fails": ["test_causal"],
        "why": "uses the upper triangle (looks at the future)",
        "source": '''
def causal_mask(N):
    return torch.ones(N, N, dtype=torch.bool).triu()


def causal_attention(q, k, v):
    return attention(q, k, v, mask=causal_mask(q.shape[-2]))
''',
    },
    {
        "cell": "attention_flops",
        "fails": ["test_attention_flops"],
        "why": "counts multiply-adds instead of FLOPs",
        "source": '''
def attention_flops(B, H, N, M, D, Dv):
    return B * H * N * M * D, B * H * N * M * Dv
''',
    },
    {
        "cell": "attention_flops",
        "fails": ["test_attention_flops"],
        "why": "uses D for both products (ignores Dv)",
        "source": '''
def attention_flops(B, H, N, M, D, Dv):
    return 2 * B * H * N * M * D, 2 * B * H * N * M * D
''',
    },
]
