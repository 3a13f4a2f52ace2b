"""The library's own commands of ``attnkit``.

    attnkit bench [--device D] [--n N ...] [--out build/bench]  every variant vs dense: time, memory

``add_commands(subparsers)`` adds them to a parser, so that the full ``attnkit`` command (which
also builds, releases and grades the course) offers them beside its own; ``main`` runs them on
their own (``python -m attnkit.cli bench ...``). Each command imports what it needs when it
runs, so building the parser stays cheap.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

USAGE = __doc__.split("\n\n")[1]


def cmd_bench(args) -> int:
    from attnkit import VARIANTS
    from attnkit.bench import bench, format_table, mixer_names

    unknown = [n for n in args.variants or [] if n not in VARIANTS]
    if unknown:
        print(f"attnkit bench: error: unknown variant(s) {unknown}; registered: "
              f"{', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    unknown = [n for n in args.mixers or [] if n not in mixer_names()]
    if unknown:
        print(f"attnkit bench: error: unknown mixer(s) {unknown}; registered: "
              f"{', '.join(mixer_names())}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("attnkit bench: error: --device cuda, but torch sees no GPU", file=sys.stderr)
            return 2
    ns = args.n or ([256, 512] if args.quick else [1024, 2048, 4096])
    rounds = args.rounds or (3 if args.quick else 7)
    rows = bench(out=args.out, device=args.device, ns=ns, variants=args.variants, dtype=args.dtype,
                 batch=args.batch, heads=args.heads, dim=args.dim, rounds=rounds,
                 dense_max_n=args.dense_max_n, mixers=args.mixers)
    print()
    print(format_table(rows))
    print(f"\nwrote {Path(args.out) / 'bench.csv'} and {Path(args.out) / 'bench.png'}")
    return 0


def add_commands(sub) -> None:
    """Add the library's commands to ``sub`` (what ``ArgumentParser.add_subparsers`` returns)."""
    bn = sub.add_parser("bench", help="time and memory of every variant against dense attention")
    bn.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bn.add_argument("--n", type=int, nargs="+", help="sequence lengths (default 1024 2048 4096)")
    bn.add_argument("--variants", nargs="+", help="registered variant names (default: all)")
    bn.add_argument("--mixers", nargs="*",
                    help="token mixers, timed against a dense attention layer (default: all of them, "
                         "unless --variants is given; --mixers alone: none)")
    bn.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    bn.add_argument("--batch", type=int, default=1, help="B (default 1)")
    bn.add_argument("--heads", type=int, default=4, help="H (default 4)")
    bn.add_argument("--dim", type=int, default=64, help="D, the head dim (default 64)")
    bn.add_argument("--rounds", type=int, help="interleaved timing rounds (default 7)")
    bn.add_argument("--dense-max-n", type=int,
                    help="skip dense attention above this N (default 8192 on CPU, 16384 on CUDA)")
    bn.add_argument("--quick", action="store_true", help="N 256 512 and 3 rounds (for tests)")
    bn.add_argument("--out", default="build/bench")
    bn.set_defaults(fn=cmd_bench)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnkit", epilog=USAGE,
                                description="The attnkit library's commands.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


Errors = tuple[type[BaseException], ...]


def _missing_files() -> Errors:
    return (FileNotFoundError,)


def run(args, expected: Callable[[], Errors] = _missing_files) -> int:
    """Run the command ``args`` chose and return its exit status.

    Errors of the kinds ``expected()`` returns (called only when an error is raised, so their
    classes can be imported late) are reported as one line, exit status 2; anything else keeps
    its traceback (it is a bug). Ctrl-C gives exit status 130 and a line saying that running the
    command again finishes the rest (commands keep what they finished).
    """
    try:
        return args.fn(args)
    except expected() as exc:
        print(f"attnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nattnkit {args.command}: interrupted; run it again to finish the rest",
              file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
