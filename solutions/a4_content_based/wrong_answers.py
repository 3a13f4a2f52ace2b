"""Plausible wrong answers to assignment 4, one mistake each.

``tests/test_grade_cells.py`` puts each one into the solution notebook in place of the answer
cell ``cell`` and checks that every grade cell in ``fails`` then fails.
"""

# The routing answer cell defines three functions; a wrong answer replaces the whole cell, so the
# two it does not get wrong are spelled out as in the solution.
_ROUTE = '''
def route(x, centroids):
    scores = torch.einsum("bhnd,hcd->bhnc", F.normalize(x, dim=-1), centroids)
    return scores.argmax(dim=-1)
'''

_ROUTING_ATTENTION = '''
def routing_attention(q, k, v, centroids):
    same = route(q, centroids).unsqueeze(-1) == route(k, centroids).unsqueeze(-2)
    return dense_attention(q, k, v, mask=same)
'''

_KMEANS = '''
def spherical_kmeans(x, centroids, iters):
    x_hat = F.normalize(x, dim=-1)
    C = centroids.shape[1]
    for _ in range(iters):
        members = F.one_hot(route(x_hat, centroids), C).to(x.dtype)
        sums = torch.einsum("bhnc,bhnd->hcd", members, x_hat)
        counts = members.sum(dim=(0, 2))
        centroids = torch.where((counts > 0).unsqueeze(-1), F.normalize(sums, dim=-1), centroids)
    return centroids
'''

# The lsh_chunked solution without its last lines: the sorted, chunked tensors, ready to attend.
_CHUNKED_SETUP = '''
def lsh_chunked(q, k, v, rotations, chunk):
    B, H, N, D = q.shape
    c = chunk
    nc = -(-N // c)
    pad = nc * c - N
    positions = torch.arange(N)

    def by_bucket(x, buckets):
        order = torch.argsort(buckets * N + positions, dim=-1)
        rows = x.gather(2, order.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))
        return rows, buckets.gather(-1, order), order

    def chunks(x, fill):
        padding = x.new_full((B, H, pad, *x.shape[3:]), fill)
        return torch.cat([x, padding], dim=2).view(B, H, nc, c, *x.shape[3:])
'''

WRONG_ANSWERS = [
    # ---------------------------------------------------------------- part 1: the hash
    {
        "cell": "lsh_hash",
        "fails": ["test_lsh_hash"],
        "why": "argmax over x̂R only, without -x̂R: b/2 buckets (with 2 buckets, everything collides)",
        "source": '''
def lsh_hash(x, rotations):
    x_hat = F.normalize(x, dim=-1)
    return torch.einsum("...d,rdb->r...b", x_hat, rotations).argmax(dim=-1)
''',
    },
    {
        "cell": "lsh_hash",
        "fails": ["test_lsh_hash"],
        "why": "concatenates [-x̂R, x̂R]: the right collisions, but other bucket numbers than the reference",
        "source": '''
def lsh_hash(x, rotations):
    p = torch.einsum("...d,rdb->r...b", F.normalize(x, dim=-1), rotations)
    return torch.cat([-p, p], dim=-1).argmax(dim=-1)
''',
    },
    {
        "cell": "lsh_hash",
        "fails": ["test_lsh_hash"],
        "why": "argmax of |x̂R|: a direction and its opposite share a bucket",
        "source": '''
def lsh_hash(x, rotations):
    p = torch.einsum("...d,rdb->r...b", F.normalize(x, dim=-1), rotations)
    return p.abs().argmax(dim=-1)
''',
    },
    # ---------------------------------------------------------------- part 2: exact bucketed attention
    {
        "cell": "lsh_attention",
        "fails": ["test_lsh_attention"],
        "why": "uses the first round only",
        "source": '''
def lsh_attention(q, k, v, rotations, causal=False):
    hq, hk = lsh_hash(q, rotations)[0], lsh_hash(k, rotations)[0]
    allowed = hq.unsqueeze(-1) == hk.unsqueeze(-2)
    if causal:
        allowed = allowed & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    return dense_attention(q, k, v, mask=allowed)
''',
    },
    {
        "cell": "lsh_attention",
        "fails": ["test_lsh_attention"],
        "why": "requires the same bucket in every round (all instead of any)",
        "source": '''
def lsh_attention(q, k, v, rotations, causal=False):
    hq, hk = lsh_hash(q, rotations), lsh_hash(k, rotations)
    allowed = (hq.unsqueeze(-1) == hk.unsqueeze(-2)).all(dim=0)
    if causal:
        allowed = allowed & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    return dense_attention(q, k, v, mask=allowed)
''',
    },
    {
        "cell": "lsh_attention",
        "fails": ["test_lsh_attention"],
        "why": "masks with -1e9 and its own softmax: a query with no key averages all values instead of a zero row",
        "source": '''
def lsh_attention(q, k, v, rotations, causal=False):
    hq, hk = lsh_hash(q, rotations), lsh_hash(k, rotations)
    allowed = (hq.unsqueeze(-1) == hk.unsqueeze(-2)).any(dim=0)
    if causal:
        allowed = allowed & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~allowed, -1e9)
    return torch.softmax(scores, dim=-1) @ v
''',
    },
    {
        "cell": "lsh_attention",
        "fails": ["test_lsh_attention"],
        "why": "causal mask off by one: j < i, so a query never sees its own key",
        "source": '''
def lsh_attention(q, k, v, rotations, causal=False):
    hq, hk = lsh_hash(q, rotations), lsh_hash(k, rotations)
    allowed = (hq.unsqueeze(-1) == hk.unsqueeze(-2)).any(dim=0)
    if causal:
        allowed = allowed & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(-1)
    return dense_attention(q, k, v, mask=allowed)
''',
    },
    # ---------------------------------------------------------------- part 3: sort and chunk
    {
        "cell": "lsh_chunked",
        "fails": ["test_lsh_chunked", "test_lsh_speed"],
        "why": "exact bucketed attention with an N×N mask: no chunks (other values, quadratic memory and time)",
        "source": '''
def lsh_chunked(q, k, v, rotations, chunk):
    return lsh_attention(q, k, v, rotations)
''',
    },
    {
        "cell": "lsh_chunked",
        "fails": ["test_lsh_chunked"],
        "why": "each query chunk attends to its own key chunk only, not the previous one",
        "source": _CHUNKED_SETUP + '''
    hq, hk = lsh_hash(q, rotations)[0], lsh_hash(k, rotations)[0]
    sq, bq, q_order = by_bucket(q, hq)
    skv, bk, _ = by_bucket(torch.cat([k, v], dim=-1), hk)
    cq, cbq = chunks(sq, 0.0), chunks(bq, -2)
    ckv, cbk = chunks(skv, 0.0), chunks(bk, -1)
    same = cbq.unsqueeze(-1) == cbk.unsqueeze(-2)
    out = dense_attention(cq, ckv[..., :D], ckv[..., D:], mask=same)
    out = out.reshape(B, H, nc * c, -1)[:, :, :N]
    return torch.empty_like(out).scatter_(2, q_order.unsqueeze(-1).expand_as(out), out)
''',
    },
    {
        "cell": "lsh_chunked",
        "fails": ["test_lsh_chunked"],
        "why": "wraps around: chunk 0 attends to the last chunk (torch.roll)",
        "source": _CHUNKED_SETUP + '''
    hq, hk = lsh_hash(q, rotations)[0], lsh_hash(k, rotations)[0]
    sq, bq, q_order = by_bucket(q, hq)
    skv, bk, _ = by_bucket(torch.cat([k, v], dim=-1), hk)
    cq, cbq = chunks(sq, 0.0), chunks(bq, -2)
    ckv, cbk = chunks(skv, 0.0), chunks(bk, -1)
    ckv = torch.cat([torch.roll(ckv, 1, dims=2), ckv], dim=3)
    cbk = torch.cat([torch.roll(cbk, 1, dims=2), cbk], dim=3)
    same = cbq.unsqueeze(-1) == cbk.unsqueeze(-2)
    out = dense_attention(cq, ckv[..., :D], ckv[..., D:], mask=same)
    out = out.reshape(B, H, nc * c, -1)[:, :, :N]
    return torch.empty_like(out).scatter_(2, q_order.unsqueeze(-1).expand_as(out), out)
''',
    },
    {
        "cell": "lsh_chunked",
        "fails": ["test_lsh_chunked"],
        "why": "attends to every key of the two chunks, whatever its bucket",
        "source": _CHUNKED_SETUP + '''
    def with_previous(x, fill):
        before = torch.cat([torch.full_like(x[:, :, :1], fill), x[:, :, :-1]], dim=2)
        return torch.cat([before, x], dim=3)

    hq, hk = lsh_hash(q, rotations)[0], lsh_hash(k, rotations)[0]
    sq, bq, q_order = by_bucket(q, hq)
    skv, bk, _ = by_bucket(torch.cat([k, v], dim=-1), hk)
    cq = chunks(sq, 0.0)
    ckv = with_previous(chunks(skv, 0.0), 0.0)
    real = with_previous(chunks(torch.ones_like(bk, dtype=torch.bool), False), False)
    out = dense_attention(cq, ckv[..., :D], ckv[..., D:], mask=real.unsqueeze(-2))
    out = out.reshape(B, H, nc * c, -1)[:, :, :N]
    return torch.empty_like(out).scatter_(2, q_order.unsqueeze(-1).expand_as(out), out)
''',
    },
    {
        "cell": "lsh_chunked",
        "fails": ["test_lsh_chunked", "test_lsh_speed"],
        "why": "right values, but through an N×N mask of the allowed (bucket, chunk) pairs: quadratic memory",
        "source": '''
def lsh_chunked(q, k, v, rotations, chunk):
    N = q.shape[-2]
    hq, hk = lsh_hash(q, rotations)[0], lsh_hash(k, rotations)[0]
    positions = torch.arange(N)
    rank_q = torch.argsort(torch.argsort(hq * N + positions, dim=-1), dim=-1)
    rank_k = torch.argsort(torch.argsort(hk * N + positions, dim=-1), dim=-1)
    gap = (rank_q // chunk).unsqueeze(-1) - (rank_k // chunk).unsqueeze(-2)
    allowed = (hq.unsqueeze(-1) == hk.unsqueeze(-2)) & ((gap == 0) | (gap == 1))
    return dense_attention(q, k, v, mask=allowed)
''',
    },
    {
        "cell": "lsh_chunked",
        "fails": ["test_lsh_chunked"],
        "why": "forgets to put the outputs back in the queries' original order",
        "source": _CHUNKED_SETUP + '''
    def with_previous(x, fill):
        before = torch.cat([torch.full_like(x[:, :, :1], fill), x[:, :, :-1]], dim=2)
        return torch.cat([before, x], dim=3)

    hq, hk = lsh_hash(q, rotations)[0], lsh_hash(k, rotations)[0]
    sq, bq, q_order = by_bucket(q, hq)
    skv, bk, _ = by_bucket(torch.cat([k, v], dim=-1), hk)
    cq, cbq = chunks(sq, 0.0), chunks(bq, -2)
    ckv = with_previous(chunks(skv, 0.0), 0.0)
    cbk = with_previous(chunks(bk, -1), -1)
    same = cbq.unsqueeze(-1) == cbk.unsqueeze(-2)
    out = dense_attention(cq, ckv[..., :D], ckv[..., D:], mask=same)
    return out.reshape(B, H, nc * c, -1)[:, :, :N]
''',
    },
    # ---------------------------------------------------------------- part 4: routing
    {
        "cell": "routing",
        "fails": ["test_routing"],
        "why": "k-means update is the plain mean of the members, not put back on the unit sphere",
        "source": _ROUTE + '''
def spherical_kmeans(x, centroids, iters):
    x_hat = F.normalize(x, dim=-1)
    C = centroids.shape[1]
    for _ in range(iters):
        members = F.one_hot(route(x_hat, centroids), C).to(x.dtype)
        sums = torch.einsum("bhnc,bhnd->hcd", members, x_hat)
        counts = members.sum(dim=(0, 2))
        centroids = torch.where((counts > 0).unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1), centroids)
    return centroids
''' + _ROUTING_ATTENTION,
    },
    {
        "cell": "routing",
        "fails": ["test_routing"],
        "why": "sums the raw rows, not the normalised ones: long vectors pull the centroids",
        "source": _ROUTE + '''
def spherical_kmeans(x, centroids, iters):
    C = centroids.shape[1]
    for _ in range(iters):
        members = F.one_hot(route(x, centroids), C).to(x.dtype)
        sums = torch.einsum("bhnc,bhnd->hcd", members, x)
        counts = members.sum(dim=(0, 2))
        centroids = torch.where((counts > 0).unsqueeze(-1), F.normalize(sums, dim=-1), centroids)
    return centroids
''' + _ROUTING_ATTENTION,
    },
    {
        "cell": "routing",
        "fails": ["test_routing"],
        "why": "an empty cluster's centroid becomes zero (normalising a zero sum)",
        "source": _ROUTE + '''
def spherical_kmeans(x, centroids, iters):
    x_hat = F.normalize(x, dim=-1)
    C = centroids.shape[1]
    for _ in range(iters):
        members = F.one_hot(route(x_hat, centroids), C).to(x.dtype)
        centroids = F.normalize(torch.einsum("bhnc,bhnd->hcd", members, x_hat), dim=-1)
    return centroids
''' + _ROUTING_ATTENTION,
    },
    {
        "cell": "routing",
        "fails": ["test_routing"],
        "why": "routes to the farthest centroid (argmin of the dot product, as if it were a distance)",
        "source": '''
def route(x, centroids):
    scores = torch.einsum("bhnd,hcd->bhnc", F.normalize(x, dim=-1), centroids)
    return scores.argmin(dim=-1)
''' + _KMEANS + _ROUTING_ATTENTION,
    },
    {
        "cell": "routing",
        "fails": ["test_routing"],
        "why": "routing attention with -1e9 and its own softmax: a query whose cluster has no key averages all values",
        "source": _ROUTE + _KMEANS + '''
def routing_attention(q, k, v, centroids):
    same = route(q, centroids).unsqueeze(-1) == route(k, centroids).unsqueeze(-2)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~same, -1e9)
    return torch.softmax(scores, dim=-1) @ v
''',
    },
    # ---------------------------------------------------------------- part 5: Sinkhorn
    {
        "cell": "sinkhorn_normalise",
        "fails": ["test_sinkhorn"],
        "why": "normalises the rows only (a softmax, not doubly stochastic)",
        "source": '''
def sinkhorn_normalise(logits, iters, temperature):
    x = logits / temperature
    for _ in range(iters):
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
    return torch.exp(x)
''',
    },
    {
        "cell": "sinkhorn_normalise",
        "fails": ["test_sinkhorn"],
        "why": "columns first, then rows: the rows sum to 1 exactly, the columns only approximately",
        "source": '''
def sinkhorn_normalise(logits, iters, temperature):
    x = logits / temperature
    for _ in range(iters):
        x = x - torch.logsumexp(x, dim=-2, keepdim=True)
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
    return torch.exp(x)
''',
    },
    {
        "cell": "sinkhorn_normalise",
        "fails": ["test_sinkhorn"],
        "why": "normalises exp(logits / τ) directly: right for small logits, inf / inf = NaN for large ones",
        "source": '''
def sinkhorn_normalise(logits, iters, temperature):
    P = torch.exp(logits / temperature)
    for _ in range(iters):
        P = P / P.sum(dim=-1, keepdim=True)
        P = P / P.sum(dim=-2, keepdim=True)
    return P
''',
    },
    {
        "cell": "sinkhorn_normalise",
        "fails": ["test_sinkhorn"],
        "why": "multiplies by the temperature instead of dividing",
        "source": '''
def sinkhorn_normalise(logits, iters, temperature):
    x = logits * temperature
    for _ in range(iters):
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
        x = x - torch.logsumexp(x, dim=-2, keepdim=True)
    return torch.exp(x)
''',
    },
    {
        "cell": "sinkhorn_normalise",
        "fails": ["test_sinkhorn"],
        "why": "returns log P (forgets the final exp)",
        "source": '''
def sinkhorn_normalise(logits, iters, temperature):
    x = logits / temperature
    for _ in range(iters):
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
        x = x - torch.logsumexp(x, dim=-2, keepdim=True)
    return x
''',
    },
    # ---------------------------------------------------------------- part 6: Synthesizer, FNet
    {
        "cell": "synthesizer",
        "fails": ["test_synthesizer"],
        "why": "softmax over the queries (dim -2) instead of the keys",
        "source": '''
def random_synthesizer(v, logits):
    return torch.softmax(logits, dim=-2) @ v
''',
    },
    {
        "cell": "synthesizer",
        "fails": ["test_synthesizer"],
        "why": "mixes with the raw logits (no softmax)",
        "source": '''
def random_synthesizer(v, logits):
    return logits @ v
''',
    },
    {
        "cell": "fourier_mixing",
        "fails": ["test_fourier_mixing"],
        "why": "transforms along the sequence only (1-D FFT over the tokens)",
        "source": '''
def fourier_mixing(x):
    return torch.fft.fft(x, dim=-2).real
''',
    },
    {
        "cell": "fourier_mixing",
        "fails": ["test_fourier_mixing"],
        "why": "keeps the magnitude |FFT2(x)| instead of the real part",
        "source": '''
def fourier_mixing(x):
    return torch.fft.fft2(x, dim=(-2, -1)).abs()
''',
    },
    # ---------------------------------------------------------------- part 7: RFA
    {
        "cell": "rfa",
        "fails": ["test_rfa"],
        "why": "features of the raw q, k (not normalised): tends to another limit",
        "source": '''
def rfa_features(x, w):
    proj = x @ w.T
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1) / math.sqrt(w.shape[0])


def rfa_attention(q, k, v, w):
    fq, fk = rfa_features(q, w), rfa_features(k, w)
    S = fk.transpose(-2, -1) @ v
    z = fk.sum(dim=-2)
    return (fq @ S) / (fq @ z.unsqueeze(-1))
''',
    },
    {
        "cell": "rfa",
        "fails": ["test_rfa"],
        "why": "cos features only: estimates (κ(x - y) + κ(x + y)) / 2, a biased kernel",
        "source": '''
def rfa_features(x, w):
    proj = F.normalize(x, dim=-1) @ w.T
    return torch.cos(proj) / math.sqrt(w.shape[0])


def rfa_attention(q, k, v, w):
    fq, fk = rfa_features(q, w), rfa_features(k, w)
    S = fk.transpose(-2, -1) @ v
    z = fk.sum(dim=-2)
    return (fq @ S) / (fq @ z.unsqueeze(-1))
''',
    },
    {
        "cell": "rfa",
        "fails": ["test_rfa"],
        "why": "forgets the normaliser phi(q)·Σphi(k)",
        "source": '''
def rfa_features(x, w):
    proj = F.normalize(x, dim=-1) @ w.T
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1) / math.sqrt(w.shape[0])


def rfa_attention(q, k, v, w):
    fq, fk = rfa_features(q, w), rfa_features(k, w)
    return fq @ (fk.transpose(-2, -1) @ v)
''',
    },
]
