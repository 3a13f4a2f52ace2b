"""Plausible wrong answers to assignment 2, one mistake each.

``tests/test_grade_cells.py`` puts each one into the solution notebook in place of the answer
cell ``cell`` and checks that every grade cell in ``fails`` then fails. ``autograder/samples.py``
uses some of them for the sample submissions.
"""

_MASKS_OK_DILATED = '''
def dilated_mask(window, dilation):
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= window * dilation) & (d % dilation == 0)
    return mask_mod
'''

_MASKS_OK_LOCAL = '''
def local_mask(window, causal=False):
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        keep = d.abs() <= window
        return keep & (d >= 0) if causal else keep
    return mask_mod
'''

_GLOBAL_OK = '''
def global_mask(num_global):
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx < num_global) | (kv_idx < num_global)
    return mask_mod
'''

_STRIDED_OK = '''
def strided_mask(stride):
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d >= 0) & ((d < stride) | (d % stride == 0))
    return mask_mod
'''

# BigBird attention as dense attention under the layout's block mask (right values, N×N memory).
_BIGBIRD_DENSE = '''

def bigbird_attention(q, k, v, block, window_blocks, global_blocks, random_blocks, seed):
    N = q.shape[-2]
    layout = bigbird_layout(math.ceil(N / block), window_blocks, global_blocks, random_blocks, seed)
    pos = torch.arange(N)
    mask = layout[pos.view(-1, 1) // block, pos.view(1, -1) // block]
    return dense_attention(q, k, v, mask=mask)
'''

_XL_TEMPLATE = '''
def xl_step(q, k, v, mem_k, mem_v, memory):
    S, P = q.shape[-2], mem_k.shape[-2]
    keys = torch.cat([{mk}, k], dim=2)
    values = torch.cat([{mv}, v], dim=2)
    visible = torch.arange(P + S).view(1, -1) <= torch.arange(S).view(-1, 1) + {offset}
    scores = (q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~visible, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ values
    start = {start}
    return out, (keys[:, :, start:]{detach}, values[:, :, start:]{detach})
'''

_XL_OK = {"mk": "mem_k.detach()", "mv": "mem_v.detach()", "offset": "P",
          "start": "max(P + S - memory, 0)", "detach": ".detach()"}

WRONG_ANSWERS = [
    {
        "cell": "window_masks",
        "fails": ["test_window_masks"],
        "why": "strict inequality: |i - j| < window drops the window's edge",
        "source": '''
def local_mask(window, causal=False):
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        keep = d.abs() < window
        return keep & (d >= 0) if causal else keep
    return mask_mod
''' + _MASKS_OK_DILATED,
    },
    {
        "cell": "window_masks",
        "fails": ["test_window_masks"],
        "why": "ignores causal=True",
        "source": '''
def local_mask(window, causal=False):
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= window
    return mask_mod
''' + _MASKS_OK_DILATED,
    },
    {
        "cell": "window_masks",
        "fails": ["test_window_masks"],
        "why": "dilated window reaches only `window` positions instead of window * dilation",
        "source": _MASKS_OK_LOCAL + '''
def dilated_mask(window, dilation):
    def mask_mod(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return (d.abs() <= window) & (d % dilation == 0)
    return mask_mod
''',
    },
    {
        "cell": "strided_global_masks",
        "fails": ["test_strided_global_masks"],
        "why": "strided pattern without causality (looks at future positions too)",
        "source": '''
def strided_mask(stride):
    def mask_mod(b, h, q_idx, kv_idx):
        d = (q_idx - kv_idx).abs()
        return (d < stride) | (d % stride == 0)
    return mask_mod
''' + _GLOBAL_OK,
    },
    {
        "cell": "strided_global_masks",
        "fails": ["test_strided_global_masks"],
        "why": "global tokens are seen by everyone but do not see everything themselves",
        "source": _STRIDED_OK + '''
def global_mask(num_global):
    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx < num_global
    return mask_mod
''',
    },
    {
        "cell": "sliding_window",
        "fails": ["test_sliding_window_work", "test_sliding_window_speed"],
        "why": "right values, but dense attention with a mask: N² memory and time",
        "source": '''
def sliding_window_attention(q, k, v, window):
    N = q.shape[-2]
    i = torch.arange(N, device=q.device)
    mask = (i.view(-1, 1) - i.view(1, -1)).abs() <= window
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
''',
    },
    {
        "cell": "sliding_window",
        "fails": ["test_sliding_window", "test_sliding_window_speed"],
        "why": "chunked, but the zero padding keys are not masked (they get weight exp(0))",
        "source": '''
def sliding_window_attention(q, k, v, window):
    B, H, N, D = q.shape
    w = min(window, N - 1)
    c = max(w, 1)
    n, L = math.ceil(N / c), c + 2 * w
    qc = F.pad(q, (0, 0, 0, n * c - N)).view(B, H, n, c, D) / math.sqrt(D)
    pad = (0, 0, w, n * c - N + w)
    ks = F.pad(k, pad).unfold(2, L, c)
    vs = F.pad(v, pad).unfold(2, L, c).transpose(-2, -1)
    i = torch.arange(n * c, device=q.device).view(n, c, 1)
    j = (torch.arange(n, device=q.device) * c - w).view(n, 1, 1) + torch.arange(L, device=q.device)
    keep = (i - j).abs() <= w
    scores = (qc @ ks).masked_fill(~keep, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vs
    return out.reshape(B, H, n * c, D)[:, :, :N]
''',
    },
    {
        "cell": "sliding_window",
        "fails": ["test_sliding_window", "test_sliding_window_speed"],
        "why": "non-overlapping blocks: each query sees only its own chunk of w keys (block-local attention)",
        "source": '''
def sliding_window_attention(q, k, v, window):
    B, H, N, D = q.shape
    c = max(min(window, N), 1)
    n = math.ceil(N / c)
    pad = (0, 0, 0, n * c - N)
    qc, kc, vc = (F.pad(x, pad).view(B, H, n, c, D) for x in (q, k, v))
    pos = torch.arange(n * c, device=q.device).view(n, 1, c)
    scores = (qc @ kc.transpose(-2, -1) / math.sqrt(D)).masked_fill(pos >= N, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vc
    return out.reshape(B, H, n * c, D)[:, :, :N]
''',
    },
    {
        "cell": "longformer",
        "fails": ["test_longformer"],
        "why": "global tokens only get the window as queries (they should see every key)",
        "source": '''
def longformer_attention(q, k, v, window, num_global):
    B, H, N, D = q.shape
    g = min(num_global, N)
    i = torch.arange(N)
    d = i.view(-1, 1) - i.view(1, -1)
    out = []
    for r in range(N):
        cols = i[(d[r].abs() <= window) | (i < g)]
        s = q[:, :, r:r + 1] @ k[:, :, cols].transpose(-2, -1) / math.sqrt(D)
        out.append(torch.softmax(s, dim=-1) @ v[:, :, cols])
    return torch.cat(out, dim=2)
''',
    },
    {
        "cell": "longformer",
        "fails": ["test_longformer"],
        "why": "counts the global keys that lie inside the window twice",
        "source": '''
def longformer_attention(q, k, v, window, num_global):
    B, H, N, D = q.shape
    g = min(num_global, N)
    out_w = sliding_window_attention(q, k, v, window)
    s = q @ k.transpose(-2, -1)
    i = torch.arange(N)
    band = (i.view(-1, 1) - i.view(1, -1)).abs() <= window
    s_w = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(~band, float("-inf"))
    lse_w = torch.logsumexp(s_w, dim=-1)
    s_g = q @ k[:, :, :g].transpose(-2, -1) / math.sqrt(D)
    lse_g = torch.logsumexp(s_g, dim=-1) if g else torch.full_like(lse_w, float("-inf"))
    out_g = torch.softmax(s_g, dim=-1) @ v[:, :, :g] if g else torch.zeros_like(out_w)
    out = merge_softmax_parts(out_w, lse_w, out_g, lse_g)
    rows = torch.softmax(q[:, :, :g] @ k.transpose(-2, -1) / math.sqrt(D), dim=-1) @ v
    return torch.cat([rows, out[:, :, g:]], dim=2)
''',
    },
    {
        "cell": "longformer",
        "fails": ["test_longformer"],
        "why": "right values, but dense attention with the Longformer mask (an N×N tensor)",
        "source": '''
def longformer_attention(q, k, v, window, num_global):
    N = q.shape[-2]
    i = torch.arange(N)
    mask = ((i.view(-1, 1) - i.view(1, -1)).abs() <= window) | (i.view(-1, 1) < num_global) | (i.view(1, -1) < num_global)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
''',
    },
    {
        "cell": "bigbird",
        "fails": ["test_bigbird"],
        "why": "global blocks see everything but nobody sees them (rows only, no columns)",
        "source": '''
def bigbird_layout(num_blocks, window_blocks, global_blocks, random_blocks, seed):
    a = torch.arange(num_blocks).view(-1, 1)
    b = torch.arange(num_blocks).view(1, -1)
    layout = ((a - b).abs() <= window_blocks) | (a < global_blocks) | (b < 0 * global_blocks)
    gen = torch.Generator().manual_seed(seed)
    for row in range(num_blocks):
        layout[row, torch.randperm(num_blocks, generator=gen)[:random_blocks]] = True
    return layout
''' + _BIGBIRD_DENSE,
    },
    {
        "cell": "bigbird",
        "fails": ["test_bigbird"],
        "why": "random blocks from the global random state: not reproducible from the seed",
        "source": '''
def bigbird_layout(num_blocks, window_blocks, global_blocks, random_blocks, seed):
    a = torch.arange(num_blocks).view(-1, 1)
    b = torch.arange(num_blocks).view(1, -1)
    layout = ((a - b).abs() <= window_blocks) | (a < global_blocks) | (b < global_blocks)
    for row in range(num_blocks):
        layout[row, torch.randperm(num_blocks)[:random_blocks]] = True
    return layout


def bigbird_attention(q, k, v, block, window_blocks, global_blocks, random_blocks, seed):
    B, H, N, D = q.shape
    nb = math.ceil(N / block)
    layout = bigbird_layout(nb, window_blocks, global_blocks, random_blocks, seed)
    pos = torch.arange(N)
    outs = []
    for a in range(nb):
        rows = pos[a * block:(a + 1) * block]
        cols = pos[layout[a][pos // block]]
        scores = q[:, :, rows] @ k[:, :, cols].transpose(-2, -1) / math.sqrt(D)
        outs.append(torch.softmax(scores, dim=-1) @ v[:, :, cols])
    return torch.cat(outs, dim=2)
''',
    },
    {
        "cell": "bigbird",
        "fails": ["test_bigbird"],
        "why": "right values, but dense attention under the block mask (an N×N tensor)",
        "source": '''
def bigbird_layout(num_blocks, window_blocks, global_blocks, random_blocks, seed):
    a = torch.arange(num_blocks).view(-1, 1)
    b = torch.arange(num_blocks).view(1, -1)
    layout = ((a - b).abs() <= window_blocks) | (a < global_blocks) | (b < global_blocks)
    gen = torch.Generator().manual_seed(seed)
    for row in range(num_blocks):
        layout[row, torch.randperm(num_blocks, generator=gen)[:random_blocks]] = True
    return layout
''' + _BIGBIRD_DENSE,
    },
    {
        "cell": "xl_step",
        "fails": ["test_xl_step"],
        "why": "the causal mask forgets the memory offset (query i sees only keys j <= i of the concatenation)",
        "source": _XL_TEMPLATE.format(**{**_XL_OK, "offset": "0"}),
    },
    {
        "cell": "xl_step",
        "fails": ["test_xl_step"],
        "why": "the memory is not detached: gradient flows into the previous segment",
        "source": _XL_TEMPLATE.format(**{**_XL_OK, "mk": "mem_k", "mv": "mem_v", "detach": ""}),
    },
    {
        "cell": "xl_step",
        "fails": ["test_xl_step"],
        "why": "the memory keeps growing: new memory is the whole concatenation, not its last `memory` positions",
        "source": _XL_TEMPLATE.format(**{**_XL_OK, "start": "0"}),
    },
]
