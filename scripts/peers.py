"""Time the kit's content-based variants beside the PyPI packages a user would pick instead.

    .venv/bin/python scripts/peers.py [--n 4096 8192] [--threads 2] [--peer-dir DIR]

The peers (lucidrains' ``reformer-pytorch``, ``routing-transformer``, ``sinkhorn-transformer`` and
what they import) are installed with ``pip install --target`` into a temporary folder (or
``--peer-dir``, reused when it already imports them): never into the kit's environment or its
dependencies. Each row runs the kit's function, the peer's module and dense attention in one
process on the same ``(B, H, N, D)`` float32 inputs, timed in interleaved rounds (medians of
per-round ratios, :func:`attnkit.measure.compare_speed`), with peak memory from
:func:`attnkit.measure.peak_memory`. The settings are matched as closely as the packages allow:

- Reformer: ``LSHAttention(bucket_size=c, n_hashes=r)`` on shared QK, against
  ``lsh(q, q, v, buckets=N // c, rounds=r, chunk=c, shared_qk=True)`` (both sort by bucket, cut
  chunks of c and look one chunk back);
- Routing: ``KmeansAttention(num_clusters=C, window_size=N // C)`` in evaluation mode (its
  centroids are a running average, so no k-means runs at inference), against
  ``routing(balanced=True)`` with the centroids given, and with ``iters`` k-means steps inside;
- Sinkhorn: ``SinkhornAttention(bucket_size=b)`` (a learned sort net), against
  ``sinkhorn(block=b)`` (block-mean summaries, no parameters).

Writes ``build/peers/peers.csv`` and prints a Markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import attnkit
from attnkit.lsh import lsh
from attnkit.measure import compare_speed, peak_memory
from attnkit.routing import routing, spherical_kmeans
from attnkit.sinkhorn import sinkhorn

PACKAGES = ["reformer-pytorch", "routing-transformer", "sinkhorn-transformer", "einops",
            "local-attention", "axial-positional-embedding", "product-key-memory",
            "mixture-of-experts", "hyper-connections", "colt5-attention"]
MODULES = ["reformer_pytorch", "routing_transformer", "sinkhorn_transformer"]
B, H, D = 1, 4, 64
CHUNK, ROUNDS, CLUSTERS, ITERS, BLOCK = 64, 2, 64, 3, 64


def install_peers(folder: Path) -> None:
    """Make the peers importable from ``folder`` (pip install --target there when needed)."""
    sys.path.insert(0, str(folder))
    try:
        for name in MODULES:
            importlib.import_module(name)
        return
    except ImportError:
        pass
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder),
                    *PACKAGES], check=True)
    importlib.invalidate_caches()
    for name in MODULES:
        importlib.import_module(name)


def pairs(N: int):
    """(label, ours, peer) for each comparison at length N: functions of (q, k, v)."""
    from reformer_pytorch import LSHAttention
    from routing_transformer.routing_transformer import KmeansAttention
    from sinkhorn_transformer.sinkhorn_transformer import SinkhornAttention

    reformer = LSHAttention(bucket_size=CHUNK, n_hashes=ROUNDS, causal=False).eval()
    kmeans = KmeansAttention(CLUSTERS, N // CLUSTERS, H, D).eval()
    sink = SinkhornAttention(BLOCK, H * D, D, H, N).eval()
    centroids = {}

    def ours_lsh(q, k, v):
        return lsh(q, q, v, buckets=N // CHUNK, rounds=ROUNDS, chunk=CHUNK, shared_qk=True)

    def peer_lsh(q, k, v):
        return reformer(q.flatten(0, 1), v.flatten(0, 1))[0]

    def ours_routing_given(q, k, v):
        if "c" not in centroids:
            centroids["c"] = spherical_kmeans(torch.cat([q, k], dim=2), CLUSTERS, iters=ITERS)
        return routing(q, k, v, clusters=CLUSTERS, centroids=centroids["c"], balanced=True)

    def ours_routing_kmeans(q, k, v):
        return routing(q, k, v, clusters=CLUSTERS, iters=ITERS, balanced=True)

    def peer_routing(q, k, v):
        return kmeans(q, k, v)[0]

    def ours_sinkhorn(q, k, v):
        return sinkhorn(q, k, v, block=BLOCK)

    def peer_sinkhorn(q, k, v):
        return sink(q, k, v)

    return [
        (f"lsh (shared QK, chunk={CHUNK}, rounds={ROUNDS}) vs LSHAttention", ours_lsh, peer_lsh),
        (f"routing (balanced, C={CLUSTERS}, centroids given) vs KmeansAttention", ours_routing_given, peer_routing),
        (f"routing (balanced, C={CLUSTERS}, {ITERS} k-means steps) vs KmeansAttention", ours_routing_kmeans,
         peer_routing),
        (f"sinkhorn (block={BLOCK}) vs SinkhornAttention", ours_sinkhorn, peer_sinkhorn),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--peer-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("build/peers"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    install_peers(args.peer_dir or Path(tempfile.mkdtemp(prefix="attnkit-peers-")))
    rows = []
    for N in args.n:
        g = torch.Generator().manual_seed(N)
        q, k, v = (torch.randn(B, H, N, D, generator=g) for _ in range(3))
        with torch.no_grad():
            dense_mib = peak_memory(attnkit.dense_attention, q, k, v) / 2**20
        for label, ours, peer in pairs(N):
            with torch.no_grad():
                ours_mib = peak_memory(ours, q, k, v) / 2**20
                peer_mib = peak_memory(peer, q, k, v) / 2**20
            vs_peer = compare_speed(ours, peer, q, k, v, rounds=args.rounds, warmup=1)
            vs_dense = compare_speed(ours, attnkit.dense_attention, q, k, v, rounds=args.rounds, warmup=1)
            rows.append({"comparison": label, "N": N, "ours_ms": vs_peer.median_a * 1e3,
                         "peer_ms": vs_peer.median_b * 1e3, "ours_over_peer_time": 1 / vs_peer.speedup,
                         "speedup_vs_dense": vs_dense.speedup, "ours_mib": ours_mib, "peer_mib": peer_mib,
                         "dense_mib": dense_mib})
            print(f"N={N} {label}: ours {rows[-1]['ours_ms']:.1f} ms, peer {rows[-1]['peer_ms']:.1f} ms, "
                  f"ours/peer {rows[-1]['ours_over_peer_time']:.2f}, {vs_dense.speedup:.1f}x dense; "
                  f"{ours_mib:.0f} / {peer_mib:.0f} / {dense_mib:.0f} MiB", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "peers.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}\n")
    print("| comparison | N | kit ms | peer ms | kit / peer time | kit vs dense | MiB kit / peer / dense |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['comparison']} | {r['N']} | {r['ours_ms']:.1f} | {r['peer_ms']:.1f} | "
              f"{r['ours_over_peer_time']:.2f} | {r['speedup_vs_dense']:.1f}× | "
              f"{r['ours_mib']:.0f} / {r['peer_mib']:.0f} / {r['dense_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
