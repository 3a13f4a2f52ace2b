"""Plausible wrong answers to assignment 5, one mistake each.

``tests/test_grade_cells.py`` puts each one into the solution notebook in place of the answer
cell ``cell`` and checks that every grade cell in ``fails`` then fails.
"""

_BELL_HEAD = '''
def bell_attention(q, k, v, sigma, *, window, global_tokens=0, normalised=False):
    B, H, N, D = q.shape
    i = torch.arange(N)
    d = (i.view(N, 1) - i.view(1, N)).to(q.dtype)
    s = sigma if sigma.dim() == 0 else sigma.view(B, 1, N, 1)
'''

_BELL_TAIL = '''
    scores = q @ k.transpose(-2, -1) / math.sqrt(D) + bias
    return torch.softmax(scores, dim=-1) @ v
'''

_SIGMA_NET_HEAD = '''
class SigmaNet(nn.Module):
    def __init__(self, dim, hidden=16, sigma_init=1.0, sigma_min=0.1):
        super().__init__()
        self.sigma_min = sigma_min
        self.W_p = nn.Linear(dim, hidden, bias=False)
        self.U_d = nn.Linear(hidden, 1)
        nn.init.zeros_(self.U_d.weight)
'''

_VARIABLE_HEAD = '''
def variable_window_attention(q, k, v, widths):
    B, H, N, D = q.shape
    W = int(widths.max())
    kp = F.pad(k, (0, 0, W, W))
    vp = F.pad(v, (0, 0, W, W))
    offsets = torch.arange(-W, W + 1)
    scores = torch.stack([(q * kp[:, :, W + o: W + o + N]).sum(-1) for o in offsets.tolist()], dim=-1)
    scores = scores / math.sqrt(D)
    j = torch.arange(N).view(N, 1) + offsets.view(1, -1)
'''

_VARIABLE_TAIL = '''
    p = torch.softmax(scores.masked_fill(~keep.unsqueeze(1), -math.inf), dim=-1)
    out = 0
    for n, o in enumerate(offsets.tolist()):
        out = out + p[..., n: n + 1] * vp[:, :, W + o: W + o + N]
    return out
'''

_TRAIN = '''
def train_sigma(normalised, *, seed, global_tokens=3, steps=30, lr=0.1, N=32, C=8, r=4, batch=8):
    torch.manual_seed(seed)
    net = SigmaNet(C)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = global_tokens
    i = torch.arange(N)
    box = (((i.view(N, 1) - i.view(1, N)).abs() <= r) & (i.view(1, N) >= g)).to(torch.get_default_dtype())
    box = box / box.sum(-1, keepdim=True)
    zeros = torch.zeros(batch, 1, N, C)
    sigma_means, losses = [], []
    for _ in range(steps):
        x = torch.randn(batch, N, C)
        target = box @ x
        sigma = net(x)
        out = bell_attention(zeros, zeros, x.unsqueeze(1), sigma, window=N, global_tokens=g,
                             normalised=NORMALISED)[:, 0]
        loss = ((out - target)[:, g:] ** 2).mean()
        opt.zero_grad()
        loss.backward()
        STEP
        sigma_means.append(sigma[:, g:].mean().item())
        losses.append(loss.item())
    return sigma_means, sum(losses[-10:]) / 10
'''

WRONG_ANSWERS = [
    {
        "cell": "bell_attention",
        "fails": ["test_bell_values", "test_train_sigma"],
        "why": "subtracts the PDF's peak from every score, global keys included (so it always cancels)",
        "source": _BELL_HEAD + '''
    bias = -0.5 * (d / s) ** 2
    bias = bias.masked_fill(d.abs() > window, -math.inf)
    is_global = i < global_tokens
    bias = torch.where(is_global.view(N, 1) | is_global.view(1, N), torch.zeros_like(bias), bias)
    if normalised:
        bias = bias - torch.log(s * math.sqrt(2 * math.pi))
''' + _BELL_TAIL,
    },
    {
        "cell": "bell_attention",
        "fails": ["test_bell_values", "test_bell_gradient"],
        "why": "forgets the 1/2 in the exponent",
        "source": _BELL_HEAD + '''
    bias = -((d / s) ** 2)
    if normalised:
        bias = bias - torch.log(s * math.sqrt(2 * math.pi))
    bias = bias.masked_fill(d.abs() > window, -math.inf)
    is_global = i < global_tokens
    bias = torch.where(is_global.view(N, 1) | is_global.view(1, N), torch.zeros_like(bias), bias)
''' + _BELL_TAIL,
    },
    {
        "cell": "bell_attention",
        "fails": ["test_bell_gradient", "test_train_sigma"],
        "why": "detaches sigma (right values, no gradient: sigma cannot be learned)",
        "source": _BELL_HEAD + '''
    s = s.detach()
    bias = -0.5 * (d / s) ** 2
    if normalised:
        bias = bias - torch.log(s * math.sqrt(2 * math.pi))
    bias = bias.masked_fill(d.abs() > window, -math.inf)
    is_global = i < global_tokens
    bias = torch.where(is_global.view(N, 1) | is_global.view(1, N), torch.zeros_like(bias), bias)
''' + _BELL_TAIL,
    },
    {
        "cell": "bell_attention",
        "fails": ["test_bell_values"],
        "why": "window keys |i - j| < w instead of <= w",
        "source": _BELL_HEAD + '''
    bias = -0.5 * (d / s) ** 2
    if normalised:
        bias = bias - torch.log(s * math.sqrt(2 * math.pi))
    bias = bias.masked_fill(d.abs() >= window, -math.inf)
    is_global = i < global_tokens
    bias = torch.where(is_global.view(N, 1) | is_global.view(1, N), torch.zeros_like(bias), bias)
''' + _BELL_TAIL,
    },
    {
        "cell": "bell_attention",
        "fails": ["test_bell_values"],
        "why": "global rows see everything, but global columns keep the curve (and the window mask)",
        "source": _BELL_HEAD + '''
    bias = -0.5 * (d / s) ** 2
    if normalised:
        bias = bias - torch.log(s * math.sqrt(2 * math.pi))
    bias = bias.masked_fill(d.abs() > window, -math.inf)
    is_global = i < global_tokens
    bias = torch.where(is_global.view(N, 1), torch.zeros_like(bias), bias)
''' + _BELL_TAIL,
    },
    {
        "cell": "sigma_net",
        "fails": ["test_sigma_net"],
        "why": "sigma = exp(z) with no floor: positive, but below sigma_min for very negative z",
        "source": _SIGMA_NET_HEAD + '''
        nn.init.constant_(self.U_d.bias, math.log(sigma_init))

    def forward(self, x):
        return torch.exp(self.U_d(torch.tanh(self.W_p(x)))).squeeze(-1)
''',
    },
    {
        "cell": "sigma_net",
        "fails": ["test_sigma_net"],
        "why": "forgets the bias initialisation (starts at sigma_min + log 2, not sigma_init)",
        "source": _SIGMA_NET_HEAD + '''
        nn.init.zeros_(self.U_d.bias)

    def forward(self, x):
        return self.sigma_min + F.softplus(self.U_d(torch.tanh(self.W_p(x)))).squeeze(-1)
''',
    },
    {
        "cell": "sigma_net",
        "fails": ["test_sigma_net"],
        "why": "returns (B, N, 1) instead of (B, N)",
        "source": _SIGMA_NET_HEAD + '''
        y = sigma_init - sigma_min
        nn.init.constant_(self.U_d.bias, y + math.log(-math.expm1(-y)))

    def forward(self, x):
        return self.sigma_min + F.softplus(self.U_d(torch.tanh(self.W_p(x))))
''',
    },
    {
        "cell": "window_from_sigma",
        "fails": ["test_window_from_sigma"],
        "why": "counts one tail only (P(X > w) < tol)",
        "source": '''
def window_from_sigma(sigma, tol=1e-3, max_window=128):
    z = torch.special.erfinv(torch.tensor(1 - 2 * tol, dtype=torch.float64)) * math.sqrt(2)
    return (torch.floor(sigma.double() * z) + 1).clamp(max=max_window).long()
''',
    },
    {
        "cell": "window_from_sigma",
        "fails": ["test_window_from_sigma"],
        "why": "one too small: the largest w whose tail mass is still >= tol",
        "source": '''
def window_from_sigma(sigma, tol=1e-3, max_window=128):
    z = torch.special.erfinv(torch.tensor(1 - tol, dtype=torch.float64)) * math.sqrt(2)
    return torch.floor(sigma.double() * z).clamp(max=max_window).long()
''',
    },
    {
        "cell": "window_from_sigma",
        "fails": ["test_window_from_sigma"],
        "why": "forgets the cap max_window",
        "source": '''
def window_from_sigma(sigma, tol=1e-3, max_window=128):
    z = torch.special.erfinv(torch.tensor(1 - tol, dtype=torch.float64)) * math.sqrt(2)
    return (torch.floor(sigma.double() * z) + 1).long()
''',
    },
    {
        "cell": "window_from_sigma",
        "fails": ["test_window_from_sigma"],
        "why": "the three-sigma rule instead of the tolerance",
        "source": '''
def window_from_sigma(sigma, tol=1e-3, max_window=128):
    return torch.ceil(3 * sigma.double()).clamp(max=max_window).long()
''',
    },
    {
        "cell": "variable_window",
        "fails": ["test_variable_window"],
        "why": "dense attention under the per-query mask (right values, N×N memory)",
        "source": '''
def variable_window_attention(q, k, v, widths):
    N = q.shape[-2]
    i = torch.arange(N)
    mask = (i.view(N, 1) - i.view(1, N)).abs() <= widths.view(-1, 1, N, 1)
    return dense_attention(q, k, v, mask=mask)
''',
    },
    {
        "cell": "variable_window",
        "fails": ["test_variable_window"],
        "why": "|i - j| < widths instead of <=",
        "source": _VARIABLE_HEAD + '''
    keep = (j >= 0) & (j < N) & (offsets.abs().view(1, 1, -1) < widths.view(B, N, 1))
''' + _VARIABLE_TAIL,
    },
    {
        "cell": "variable_window",
        "fails": ["test_variable_window"],
        "why": "uses the key's width instead of the query's",
        "source": _VARIABLE_HEAD + '''
    wk = widths[:, j.clamp(0, N - 1)]
    keep = (j >= 0) & (j < N) & (offsets.abs().view(1, 1, -1) <= wk)
''' + _VARIABLE_TAIL,
    },
    {
        "cell": "variable_window",
        "fails": ["test_variable_window"],
        "why": "one window, the widest, for every query",
        "source": _VARIABLE_HEAD + '''
    keep = ((j >= 0) & (j < N)).view(1, N, -1)
''' + _VARIABLE_TAIL,
    },
    {
        "cell": "train_sigma",
        "fails": ["test_train_sigma"],
        "why": "forgets opt.step(): sigma never moves",
        "source": _TRAIN.replace("NORMALISED", "normalised").replace("STEP", "pass"),
    },
    {
        "cell": "train_sigma",
        "fails": ["test_train_sigma"],
        "why": "ignores `normalised` (always the max-1 curve)",
        "source": _TRAIN.replace("NORMALISED", "False").replace("STEP", "opt.step()"),
    },
]
