"""Compare the kit's attention functions with the PyPI packages a user would pick instead, on the CPU.

    .venv/bin/python scripts/peer_bench.py [--cases local linformer performer lsh routing sinkhorn]
        [--n N ...] [--threads 1 2] [--runs 2] [--rounds 9] [--peer-dir DIR] [--write-docs]

What is compared (B=1, H=4, D=64, float32, forward only under ``torch.no_grad()``, inputs from
``torch.Generator().manual_seed(N)``):

- ``local``: ``fixed.local(window=128)`` against ``local_attention.LocalAttention(window_size=128,
  look_backward=1, look_forward=1, exact_windowsize=True, autopad=True)``: the same mask
  |i - j| <= 128, up to 257 keys per query. Also the CPU FlexAttention path: ``local`` under
  ``flex.on_cpu()`` and the kit's eager kernel, each against compiled ``flex_attention`` called
  directly with the same block mask (its first call compiles; the wall time of each side's
  first call is reported).
- ``linformer`` (k = 256): the core, ``lowrank.linformer(E=E, F=F)`` against the attention lines
  of ``linformer.LinformerSelfAttention.forward`` lifted out (the package has no separate
  function) with ``proj = E.T``; and the whole layer against a kit layer holding its weights.
- ``performer`` (m = 256): ``kernel.performer`` against ``performer_pytorch.FastAttention`` with
  its ``projection_matrix`` set to the kit's W and its feature offset eps = 1e-4 set to 0.
- ``lsh``, ``routing``, ``sinkhorn``: the content-based comparisons that were ``scripts/peers.py``.
  The two sides hash, cluster or sort differently, so their outputs are "not comparable"
  (:data:`NOTES` says why); only time and memory are compared.

How: the peers (lucidrains' packages and what they import, :data:`PACKAGES`) are installed with
``pip install --no-deps --target`` into a temporary folder (or ``--peer-dir``, reused when it
already holds them), never into the kit's environment. For every pair, in one process on the
same tensors: the first call of each side (untimed; its wall time is the compile time of the
Flex pairs), the agreement check max |kit - peer| <= rtol · max |peer| (a pair that should agree
and does not stops the script, exit status 1), the time in interleaved rounds
(:func:`attnkit.measure.compare_speed`: A B, B A, ...; the ratio is the median of per-round
ratios), all of it at each ``--threads`` count, ``--runs`` times. Then the peak resident memory
of each side (:func:`attnkit.measure.resident_peak`, which also sees compiled code), once, in a
child process started with ``MALLOC_MMAP_THRESHOLD_`` (:data:`attnkit.measure.MMAP_ENV`) so that
freed buffers go back to the kernel at once: exact there, but every large allocation then page
faults, which would slow the eager sides' timings (measured: the kit's ``local`` 1.5× slower at
N=2048), so no timing is taken in that process.

Writes ``build/peers/peer_bench.csv`` (one row per pair × N × threads × run) and prints a Markdown
section; ``--write-docs`` puts it between the markers :data:`START` and :data:`END` of
``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import functools
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit import flex
from attnkit.fixed import local, local_mask
from attnkit.kernel import _drawn_features, performer
from attnkit.lowrank import linformer, random_projection
from attnkit.lsh import lsh
from attnkit.measure import MMAP_ENV, compare_speed, resident_peak
from attnkit.modules import merge_heads, split_heads
from attnkit.routing import routing, spherical_kmeans
from attnkit.sinkhorn import sinkhorn

PACKAGES = ["local-attention", "linformer", "performer-pytorch", "einops", "hyper-connections",
            "axial-positional-embedding", "reformer-pytorch", "routing-transformer",
            "sinkhorn-transformer", "product-key-memory", "mixture-of-experts", "colt5-attention"]
B, H, D = 1, 4, 64
WINDOW, PROJ_LEN, FEATURES = 128, 256, 256
CHUNK, ROUNDS, CLUSTERS, ITERS, BLOCK = 64, 2, 64, 3, 64
RTOL = 1e-5  # agreement: max |kit - peer| <= RTOL · max |peer|
SETTLE_S = 5.0  # after compiling, Inductor's worker processes keep a core busy for a few seconds
FLEX_TARGET = 1.2  # kit-flex within 1.2× the time of direct Flex
CASES = {"local": (2048, 4096, 8192), "linformer": (4096, 8192), "performer": (4096, 8192),
         "lsh": (4096, 8192), "routing": (4096, 8192), "sinkhorn": (4096, 8192)}
START, END = "<!-- peer-bench:start -->", "<!-- peer-bench:end -->"
MEMORY_TAG = "memory: "  # the child's result lines
DOCS = Path("docs/benchmarks.md")
FLEX_LABEL = "`local` under `flex.on_cpu()` vs `flex_attention` called directly"  # its notes: flex_notes
NOTES = {
    "local": "`local`: both sides compute exactly the mask |i - j| <= 128 and must agree. "
             "FlexAttention runs 128×128 tiles (3 per query block: 384 keys scored, 257 kept). The "
             "direct side calls the compiled `flex_attention` with the block mask "
             "`flex.block_mask(...)` (the same cached mask); the kit's first call builds that mask "
             "and compiles the kernel both sides then share, with Inductor's cache in a fresh "
             "folder, so it is a cold compile. The eager row is the kit's default CPU path against "
             "the same direct Flex.",
    "linformer": "`linformer`: the package has no separate attention function, so the peer core is "
                 "`LinformerSelfAttention.forward`'s own lines lifted out: `einsum('bnd,nk->bkd')` "
                 "of the merged-head keys and values (B, N, H·D) with proj = Eᵀ, then `einsum` "
                 "scores, `softmax`, `einsum`; its keys and values are merged outside the clock "
                 "(they are `to_k`'s layout). The layer row is the package's whole module in eval "
                 "mode against a kit layer with its weights copied.",
    "performer": "`performer`: `FastAttention`'s `projection_matrix` is overwritten with the kit's "
                 "W (`kernel._drawn_features(256, 64, True, 0)`), and "
                 "`performer_pytorch.performer_pytorch.softmax_kernel` is replaced by "
                 "`functools.partial(softmax_kernel, eps=0.0)` for the whole run: by default it "
                 "adds eps = 1e-4 to every feature, which pulls its output toward uniform "
                 "attention, and the two would not agree.",
    "lsh": "`lsh`: not comparable: the Reformer package hashes with its own per-call random "
           "rotations and merges the rounds without the kit's duplicate correction.",
    "routing": "`routing`: not comparable: `KmeansAttention` routes by its running-average "
               "centroids (here as initialised, random) and runs no k-means at inference, so the "
               "\"centroids given\" row is the like-for-like one; the kit's centroids come from "
               "spherical k-means of these q and k.",
    "sinkhorn": "`sinkhorn`: not comparable: `SinkhornAttention` sorts with a learned (here "
                "randomly initialised) network where the kit uses block means; its forward also "
                "takes the sorted keys as the sorted values (`b_v_r = b_k_r.reshape(...)`).",
}


class AgreementError(AssertionError):
    """A pair that computes the same function gave different outputs."""


class MarkerError(ValueError):
    """The docs file lacks the markers the section goes between."""


@dataclass
class Pair:
    """One comparison at one length: two calls without arguments (their inputs are bound)."""

    case: str
    label: str
    keys: str  # keys each query sees, "kit / peer"
    kit: Callable[[], Tensor]
    peer: Callable[[], Tensor]
    rtol: float | None = RTOL  # None: the outputs are not comparable
    why: str = ""  # why not comparable


# ---------------------------------------------------------------- peers


def peer_versions(folder: Path) -> dict[str, str]:
    """{distribution name: version} of what is installed in ``folder`` (its dist-info folders)."""
    return {d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[str(folder)])}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def install_peers(folder: Path) -> dict[str, str]:
    """Make every package of :data:`PACKAGES` importable from ``folder`` (pip installs the missing
    ones there); return their versions."""
    folder.mkdir(parents=True, exist_ok=True)
    have = {_canonical(name) for name in peer_versions(folder)}
    missing = [p for p in PACKAGES if p not in have]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(folder), *missing], check=True)
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    for name in PACKAGES:
        importlib.import_module(name.replace("-", "_"))
    return {name: version for name, version in peer_versions(folder).items()
            if _canonical(name) in PACKAGES}


# ---------------------------------------------------------------- the pairs of each case


def _inputs(N: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(N)
    return tuple(torch.randn(B, H, N, D, generator=g) for _ in range(3))  # (B, H, N, D) each


def local_pairs(N: int) -> list[Pair]:
    from local_attention import LocalAttention

    q, k, v = _inputs(N)
    peer = LocalAttention(window_size=WINDOW, look_backward=1, look_forward=1, exact_windowsize=True,
                          autopad=True)

    def kit_flex():
        with flex.on_cpu():
            return local(q, k, v, window=WINDOW)

    def direct():  # the block mask: the kit's cached one (built by whichever side calls first)
        mask = flex.block_mask(("local", WINDOW, False), local_mask(WINDOW), 1, 1, N, N, q.device)
        return flex._compiled_flex()(q, k, v, block_mask=mask)

    eager = functools.partial(local, q, k, v, window=WINDOW)
    keys = f"≤{2 * WINDOW + 1} / ≤{2 * WINDOW + 1}"
    return [Pair("local", f"`local(window={WINDOW})` vs `LocalAttention(window_size={WINDOW}, "
                          "exact_windowsize=True)`", keys, eager, functools.partial(peer, q, k, v)),
            Pair("local", FLEX_LABEL, keys, kit_flex, direct),
            Pair("local", "`local` eager (default CPU path) vs `flex_attention` called directly",
                 keys, eager, direct)]


def _linformer_core(q: Tensor, keys: Tensor, values: Tensor, proj_k: Tensor, proj_v: Tensor) -> Tensor:
    """``LinformerSelfAttention.forward``'s lines (linformer 0.2.3) from the projection on.

    q ``(B, H, N, D)``; keys, values ``(B, N, H·D)`` (merged heads); proj_k, proj_v ``(N, k)``.
    """
    b, h, n, d_h = q.shape
    k = proj_k.shape[1]
    proj_seq_len = lambda args: torch.einsum('bnd,nk->bkd', *args)  # noqa: E731 (the package's line)
    keys, values = map(proj_seq_len, zip((keys, values), (proj_k, proj_v)))  # (B, k, H·D)
    merge_key_values = lambda t: t.reshape(b, k, -1, d_h).transpose(1, 2).expand(-1, h, -1, -1)  # noqa: E731
    keys, values = map(merge_key_values, (keys, values))  # (B, H, k, D)
    dots = torch.einsum('bhnd,bhkd->bhnk', q, keys) * (d_h ** -0.5)  # (B, H, N, k)
    attn = dots.softmax(dim=-1)
    return torch.einsum('bhnk,bhkd->bhnd', attn, values)  # (B, H, N, D)


def _kit_linformer_layer(layer, x: Tensor) -> Tensor:
    """The package's layer computed by the kit: x ``(B, N, H·D)`` -> ``(B, N, H·D)``."""
    q, k, v = (split_heads(F.linear(x, lin.weight), H) for lin in (layer.to_q, layer.to_k, layer.to_v))
    out = linformer(q, k, v, E=layer.proj_k.T, F=layer.proj_v.T)  # (B, H, N, D)
    return F.linear(merge_heads(out), layer.to_out.weight, layer.to_out.bias)


def linformer_pairs(N: int) -> list[Pair]:
    from linformer import LinformerSelfAttention

    q, k, v = _inputs(N)
    E, Fm = random_projection(PROJ_LEN, N, 0)  # (k, N) each
    merged = merge_heads(k), merge_heads(v)  # (B, N, H·D): the package's layout
    torch.manual_seed(N)
    layer = LinformerSelfAttention(dim=H * D, seq_len=N, k=PROJ_LEN, heads=H).eval()
    x = torch.randn(B, N, H * D, generator=torch.Generator().manual_seed(N))  # (B, N, H·D)
    keys = f"{PROJ_LEN} / {PROJ_LEN} (projected)"
    return [Pair("linformer", f"`linformer(E=E, F=F)`, k={PROJ_LEN}, vs the package's attention lines",
                 keys, functools.partial(linformer, q, k, v, E=E, F=Fm),
                 functools.partial(_linformer_core, q, *merged, E.T.contiguous(), Fm.T.contiguous())),
            Pair("linformer", f"kit layer (same weights) vs `LinformerSelfAttention(k={PROJ_LEN})`",
                 keys, functools.partial(_kit_linformer_layer, layer, x), functools.partial(layer, x))]


def _performer_without_eps() -> None:
    """Replace performer-pytorch's ``softmax_kernel`` by the same with eps = 0 (once)."""
    import performer_pytorch.performer_pytorch as pp

    if not isinstance(pp.softmax_kernel, functools.partial):
        pp.softmax_kernel = functools.partial(pp.softmax_kernel, eps=0.0)


def performer_pairs(N: int) -> list[Pair]:
    from performer_pytorch import FastAttention

    _performer_without_eps()
    q, k, v = _inputs(N)
    peer = FastAttention(dim_heads=D, nb_features=FEATURES).eval()
    peer.projection_matrix.copy_(_drawn_features(FEATURES, D, True, 0, torch.float32, q.device))  # (m, D)
    return [Pair("performer", f"`performer(m={FEATURES})` vs `FastAttention(nb_features={FEATURES})`, "
                              "same W, eps=0", f"all {N} through {FEATURES} features (both)",
                 functools.partial(performer, q, k, v, m=FEATURES, seed=0), functools.partial(peer, q, k, v))]


def lsh_pairs(N: int) -> list[Pair]:
    from reformer_pytorch import LSHAttention

    q, k, v = _inputs(N)
    peer = LSHAttention(bucket_size=CHUNK, n_hashes=ROUNDS, causal=False).eval()
    return [Pair("lsh", f"`lsh(q, q, v, shared_qk=True, chunk={CHUNK}, rounds={ROUNDS})` vs "
                        f"`LSHAttention(bucket_size={CHUNK}, n_hashes={ROUNDS})`",
                 f"≤{2 * CHUNK * ROUNDS} / ≤{2 * CHUNK * ROUNDS}",
                 functools.partial(lsh, q, q, v, buckets=N // CHUNK, rounds=ROUNDS, chunk=CHUNK, shared_qk=True),
                 lambda: peer(q.flatten(0, 1), v.flatten(0, 1))[0],  # (B·H, N, D)
                 rtol=None, why="different hashing")]


def routing_pairs(N: int) -> list[Pair]:
    from routing_transformer.routing_transformer import KmeansAttention

    q, k, v = _inputs(N)
    torch.manual_seed(N)
    peer = KmeansAttention(CLUSTERS, N // CLUSTERS, H, D).eval()
    centroids = spherical_kmeans(torch.cat([q, k], dim=2), CLUSTERS, iters=ITERS)  # (H, C, D)
    keys = f"{N // CLUSTERS} per cluster / {N // CLUSTERS} per cluster"
    peer_call = lambda: peer(q, k, v)[0]  # noqa: E731
    return [Pair("routing", f"`routing(balanced=True, clusters={CLUSTERS})`, centroids given, vs "
                            "`KmeansAttention` (eval: no k-means)", keys,
                 functools.partial(routing, q, k, v, clusters=CLUSTERS, centroids=centroids, balanced=True),
                 peer_call, rtol=None, why="different centroids"),
            Pair("routing", f"`routing(balanced=True, clusters={CLUSTERS}, iters={ITERS})` (k-means inside) "
                            "vs `KmeansAttention`", keys,
                 functools.partial(routing, q, k, v, clusters=CLUSTERS, iters=ITERS, balanced=True),
                 peer_call, rtol=None, why="different centroids")]


def sinkhorn_pairs(N: int) -> list[Pair]:
    from sinkhorn_transformer.sinkhorn_transformer import SinkhornAttention

    q, k, v = _inputs(N)
    torch.manual_seed(N)
    peer = SinkhornAttention(BLOCK, H * D, D, H, N).eval()
    return [Pair("sinkhorn", f"`sinkhorn(block={BLOCK})` vs `SinkhornAttention(bucket_size={BLOCK})`",
                 f"{2 * BLOCK} / {2 * BLOCK}", functools.partial(sinkhorn, q, k, v, block=BLOCK),
                 functools.partial(peer, q, k, v), rtol=None, why="different sorting")]


BUILDERS = {"local": local_pairs, "linformer": linformer_pairs, "performer": performer_pairs,
            "lsh": lsh_pairs, "routing": routing_pairs, "sinkhorn": sinkhorn_pairs}


# ---------------------------------------------------------------- measuring


def check_agreement(label: str, kit_out: Tensor, peer_out: Tensor, rtol: float) -> tuple[float, float]:
    """(max |kit - peer|, tolerance rtol · max |peer|); raises :class:`AgreementError` beyond it."""
    if kit_out.shape != peer_out.shape:
        raise AgreementError(f"{label}: kit output {tuple(kit_out.shape)} vs peer {tuple(peer_out.shape)}")
    diff = (kit_out - peer_out).abs().max().item()
    tol = rtol * peer_out.abs().max().item()
    if not diff <= tol:  # NaN fails too
        raise AgreementError(f"{label}: max |kit - peer| = {diff:.2e} exceeds the tolerance {tol:.2e} "
                             f"({rtol:g} of max |peer|)")
    return diff, tol


def _timed(fn: Callable[[], Tensor]) -> tuple[Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def first_calls(pair: Pair) -> dict:
    """One call of each side (compiles what compiles; wall times kept), then the agreement check."""
    kit_out, kit_s = _timed(pair.kit)
    peer_out, peer_s = _timed(pair.peer)
    row = {"first_kit_s": kit_s, "first_peer_s": peer_s, "max_diff": "", "tolerance": "",
           "agreement": f"not comparable ({pair.why})"}
    if pair.rtol is not None:
        diff, tol = check_agreement(pair.label, kit_out, peer_out, pair.rtol)
        row.update(max_diff=diff, tolerance=tol, agreement=f"{diff:.1e} (tol {tol:.1e})")
    return row


def measure(pair: Pair, rounds: int) -> dict:
    """Interleaved timing of the two sides."""
    speed = compare_speed(pair.kit, pair.peer, rounds=rounds, warmup=1)
    return {"kit_ms": speed.median_a * 1e3, "peer_ms": speed.median_b * 1e3,
            "kit_over_peer": 1 / speed.speedup}


def memory(args: argparse.Namespace) -> list[dict]:
    """The resident peak of each side of every pair (the ``--memory-only`` child's work).

    Runs in its own process started with :data:`MMAP_ENV`: there every buffer is mapped when
    allocated and unmapped when freed, which makes :func:`resident_peak` exact but adds page
    faults to every large allocation, so the timings are taken in the parent, without it.
    """
    rows = []
    with torch.no_grad():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for case in args.cases:
                for N in args.n or list(CASES[case]):
                    for pair in BUILDERS[case](N):
                        pair.kit(), pair.peer()  # compile and warm up, outside the measurement
                        rows.append({"comparison": pair.label, "N": N, "threads": threads,
                                     "kit_mib": resident_peak(pair.kit) / 2**20,
                                     "peer_mib": resident_peak(pair.peer) / 2**20})
    return rows


def memory_in_child(args: argparse.Namespace, folder: Path) -> dict[tuple, dict]:
    """:func:`memory` in a child process with :data:`MMAP_ENV`: ``{(comparison, N, threads): row}``."""
    argv = [sys.executable, __file__, "--memory-only", "--peer-dir", str(folder), "--cases", *args.cases,
            "--threads", *map(str, args.threads), *(["--n", *map(str, args.n)] if args.n else [])]
    done = subprocess.run(argv, env={**os.environ, **MMAP_ENV}, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the memory child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line[len(MEMORY_TAG):]) for line in done.stdout.splitlines() if line.startswith(MEMORY_TAG)]
    return {(r["comparison"], r["N"], r["threads"]): r for r in rows}


def run_case(case: str, lengths: list[int], rounds: int, context: dict) -> list[dict]:
    """Every pair of ``case`` at every length: all first calls (and compiles) before any timing."""
    built = [(N, pair) for N in lengths for pair in BUILDERS[case](N)]
    firsts = [first_calls(pair) for _, pair in built]
    if case == "local":  # the Flex pairs compiled: let Inductor's workers go quiet
        time.sleep(SETTLE_S)
    rows = []
    for (N, pair), first in zip(built, firsts):
        rows.append({**context, "case": case, "comparison": pair.label, "N": N, "keys": pair.keys,
                     **first, **measure(pair, rounds)})
        print(_progress(rows[-1]), flush=True)
    return rows


def run_all(args: argparse.Namespace) -> list[dict]:
    """Every case at every thread count, ``args.runs`` times (threads, then runs, then cases)."""
    rows = []
    with torch.no_grad():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for run in range(1, args.runs + 1):
                for case in args.cases:
                    rows += run_case(case, args.n or list(CASES[case]), args.rounds,
                                     {"threads": threads, "run": run})
    return rows


# ---------------------------------------------------------------- reporting



def _progress(row: dict) -> str:
    return (f"[{row['threads']} thread(s), run {row['run']}] N={row['N']} {row['comparison']}: "
            f"kit {row['kit_ms']:.1f} ms, peer {row['peer_ms']:.1f} ms, kit/peer {row['kit_over_peer']:.2f}; "
            f"agreement {row['agreement']}")


def _mib(x: float) -> str:
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def format_table(rows: list[dict]) -> str:
    """One line per (comparison, N, threads): the kit / peer time ratio of every run side by side,
    times and memory of run 1."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["comparison"], row["N"], row["threads"]), []).append(row)
    order = {label: i for i, label in enumerate(dict.fromkeys(r["comparison"] for r in rows))}
    runs = max(r["run"] for r in rows)
    lines = ["| comparison | N | threads | keys per query, kit / peer | agreement: max abs diff "
             f"| kit / peer time, run {' / '.join(str(i) for i in range(1, runs + 1))} "
             "| kit ms | peer ms | MiB kit / peer |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for key in sorted(groups, key=lambda key: (order[key[0]], key[1], key[2])):
        group = sorted(groups[key], key=lambda r: r["run"])
        r1 = group[0]
        ratios = " / ".join(f"{r['kit_over_peer']:.2f}" for r in group)
        lines.append(f"| {r1['comparison']} | {r1['N']} | {r1['threads']} | {r1['keys']} | {r1['agreement']} "
                     f"| {ratios} | {r1['kit_ms']:.1f} | {r1['peer_ms']:.1f} "
                     f"| {_mib(r1['kit_mib'])} / {_mib(r1['peer_mib'])} |")
    return "\n".join(lines)


def flex_notes(rows: list[dict]) -> list[str]:
    """The compile times (first calls of run 1) and the kit-flex target, from the Flex rows."""
    flex_rows = [r for r in rows if r["comparison"] == FLEX_LABEL]
    if not flex_rows:
        return []
    compiles = "; ".join(f"N={r['N']}, {r['threads']} thread(s): kit {r['first_kit_s']:.1f} s, "
                         f"direct {r['first_peer_s']:.2f} s" for r in flex_rows if r["run"] == 1)
    worst = max(flex_rows, key=lambda r: r["kit_over_peer"])
    verdict = "within" if worst["kit_over_peer"] <= FLEX_TARGET else "NOT within"
    return [f"Flex first calls, run 1 (wall time; the kit's builds the block mask and compiles, cold, "
            f"the kernel both sides share): {compiles}.",
            f"Kit-flex / direct Flex time: at most {worst['kit_over_peer']:.2f} (N={worst['N']}, "
            f"{worst['threads']} thread(s), run {worst['run']}): {verdict} the {FLEX_TARGET}× target."]


def format_section(meta: dict, rows: list[dict]) -> str:
    """The Markdown section: machine, versions, date, method, table, notes."""
    peers = ", ".join(f"`{name}` {version}" for name, version in sorted(meta["peers"].items()))
    notes = flex_notes(rows) + [NOTES[case] for case in dict.fromkeys(r["case"] for r in rows)]
    return "\n".join([
        f"### Against the PyPI peers, {meta['date']}",
        "",
        f"Machine: {meta['machine']}, {meta['cores']} cores; Python {meta['python']}, torch {meta['torch']}. "
        f"Peers: {peers} (`pip install --no-deps --target` into a folder outside the kit's environment). "
        f"Command: `{meta['command']}`.",
        "",
        f"Method: per pair and length, in one process on the same float32 tensors (B={B}, H={H}, D={D}, "
        "forward only under `torch.no_grad()`): one untimed call of each side (its wall time is the "
        f"compile time of the Flex rows), the agreement check max |kit − peer| ≤ {RTOL:g} · max |peer| "
        "(\"not comparable\": the two compute different functions), then `attnkit.measure.compare_speed` "
        f"in {meta['rounds']} interleaved rounds (A B, B A, …, after one warm-up call of each). "
        "\"kit / peer time\" is 1 / the median of the per-round ratios time_peer / time_kit, one value "
        "per run (below 1: the kit is faster); kit ms and peer ms are the medians of run 1. Memory is "
        "`attnkit.measure.resident_peak` (growth of the process's peak resident memory over one call, "
        "which also sees compiled code), measured once after the timings in a separate process started "
        f"with `{' '.join(f'{k}={v}' for k, v in MMAP_ENV.items())}`, so that freed buffers go back to "
        "the kernel at once (the timings run without it: it would add page faults to every large "
        "allocation).",
        "",
        format_table(rows),
        "",
        *(f"- {note}" for note in notes),
    ])


def splice(text: str, section: str) -> str:
    """``text`` with what lies between :data:`START` and :data:`END` replaced by ``section``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise MarkerError(
            f"{DOCS} needs the lines {START} and {END} (once each, in that order) where the peer "
            "section belongs: under '## Against the PyPI peers', before '## GPU check'. Put them there "
            "and rerun with --write-docs; the section was printed above.")
    head, rest = text.split(START)
    return f"{head}{START}\n{section.strip()}\n{END}{rest.split(END)[1]}"


def write_docs(path: Path, section: str) -> None:
    path.write_text(splice(path.read_text(), section))


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def machine_info(peers: dict[str, str]) -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    return {"machine": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "peers": peers, "date": datetime.date.today().isoformat(),
            "command": " ".join(["python", *sys.argv])}


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--n", type=int, nargs="+", default=None, help="lengths for every case")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--peer-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("build/peers"))
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_only:
        if args.peer_dir is None or any(os.environ.get(key) != value for key, value in MMAP_ENV.items()):
            print("peer_bench: --memory-only is the child's mode: it needs --peer-dir and MMAP_ENV", file=sys.stderr)
            return 2
        install_peers(args.peer_dir)
        for row in memory(args):
            print(MEMORY_TAG + json.dumps(row), flush=True)
        return 0
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        folder = args.peer_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="attnkit-peers-")))
        # a fresh Inductor cache: the Flex first calls are real compiles, not loads of an earlier run's
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="attnkit-inductor-", ignore_cleanup_errors=True))
        peers = install_peers(folder)
        print("peers:", ", ".join(f"{name} {version}" for name, version in sorted(peers.items())), flush=True)
        try:
            rows = run_all(args)
        except AgreementError as err:
            print(f"peer_bench: disagreement: {err}", file=sys.stderr)
            return 1
        print("peak memory, in a child process with MMAP_ENV ...", flush=True)
        peaks = memory_in_child(args, folder)
    for row in rows:
        peak = peaks[(row["comparison"], row["N"], row["threads"])]
        row.update(kit_mib=peak["kit_mib"], peer_mib=peak["peer_mib"])
    write_csv(rows, args.out / "peer_bench.csv")
    section = format_section({**machine_info(peers), "rounds": args.rounds}, rows)
    print(f"\n{section}\n\n({time.perf_counter() - start:.0f} s; rows in {args.out / 'peer_bench.csv'})")
    if args.write_docs:
        try:
            write_docs(DOCS, section)
        except MarkerError as err:
            print(f"peer_bench: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
