"""The benchmark measures registered variants, writes a consistent CSV and a PNG, survives errors.

Small on purpose (N of 64 and 128, 3 rounds): these check the bookkeeping, not the speed.
"""
from __future__ import annotations

import csv
import math

import pytest
import torch

from attnkit import VARIANTS, register
from attnkit import cli
from attnkit.bench import BENCH_KWARGS, COLUMNS, bench, bench_kwargs, format_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = {"ns": [64, 128], "rounds": 3, "heads": 2, "dim": 16, "log": None}


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"


def test_bench_writes_one_consistent_row_per_variant_and_length(tmp_path):
    """Columns as documented, one row per variant × N, speedup = dense_ms / ms, a PNG."""
    rows = bench(out=tmp_path, variants=["local", "bigbird"], **QUICK)
    header, written = read_rows(tmp_path / "bench.csv")
    assert header == COLUMNS
    assert [(r["variant"], int(r["N"])) for r in written] == \
        [("local", 64), ("bigbird", 64), ("local", 128), ("bigbird", 128)]
    for r in written:
        assert r["note"] == "" and r["device"] == "cpu" and r["dtype"] == "float32"
        assert (int(r["B"]), int(r["H"]), int(r["D"])) == (1, 2, 16)
        ms, dense_ms, speedup = float(r["ms"]), float(r["dense_ms"]), float(r["speedup"])
        assert ms > 0 and dense_ms > 0
        assert speedup == pytest.approx(dense_ms / ms, rel=1e-4)
        assert float(r["peak_mib"]) > 0 and float(r["dense_peak_mib"]) > 0
        # max_err is measured at the smallest N only, against the variant's dense reference.
        err = float(r["max_err"])
        assert (err < 1e-5) if int(r["N"]) == 64 else math.isnan(err)
    assert written[0]["kwargs"] == "window=128"
    assert_png(tmp_path / "bench.png")
    table = format_table(rows)
    assert "local" in table and "bigbird" in table and "speedup" in table


def test_a_failing_variant_is_reported_and_the_run_goes_on(tmp_path):
    """A variant that raises shows its error in the table; the others are still measured."""
    name = "test-bench-broken"
    assert name not in VARIANTS

    def broken(q, k, v):
        raise RuntimeError("deliberately broken for the benchmark test")

    register(name, broken, family="test", cost="", paper="none")
    try:
        rows = bench(out=tmp_path, variants=[name, "local"], **QUICK)
    finally:
        VARIANTS.pop(name, None)
    by_name = {(r["variant"], r["N"]): r for r in rows}
    assert len(rows) == 4
    for N in (64, 128):
        bad, good = by_name[(name, N)], by_name[("local", N)]
        assert bad["note"] == "RuntimeError: deliberately broken for the benchmark test"
        assert math.isnan(bad["ms"]) and math.isnan(bad["speedup"])
        assert good["note"] == "" and good["ms"] > 0
    assert "RuntimeError: deliberately broken" in format_table(rows)
    assert_png(tmp_path / "bench.png")


def test_dense_is_skipped_above_dense_max_n(tmp_path):
    """Above --dense-max-n the baseline (and the dense variant) are NaN in the CSV, "—" in a table."""
    rows = bench(out=tmp_path, variants=["dense", "local"], dense_max_n=64, **QUICK)
    at = {(r["variant"], r["N"]): r for r in rows}
    assert at[("local", 64)]["dense_ms"] > 0
    assert math.isnan(at[("local", 128)]["dense_ms"]) and at[("local", 128)]["ms"] > 0
    assert math.isnan(at[("local", 128)]["speedup"])
    assert at[("dense", 128)]["note"].startswith("skipped")
    lines = format_table(rows).splitlines()
    line = next(row for row in lines if row.startswith("local") and " 128 " in row)
    assert "—" in line


def test_bench_kwargs_fall_back_to_example_kwargs():
    for name, variant in VARIANTS.items():
        expected = BENCH_KWARGS.get(name, variant.example_kwargs)
        assert bench_kwargs(name) == expected


def test_cli_bench_quick(tmp_path, capsys):
    """``attnkit bench --quick`` parses its arguments, prints a table and writes both files."""
    out = tmp_path / "bench"
    code = cli.main(["bench", "--quick", "--n", "64", "--variants", "local", "dense",
                     "--heads", "2", "--dim", "16", "--rounds", "2", "--dtype", "float32",
                     "--dense-max-n", "4096", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "variant" in printed and "local" in printed and "bench.csv" in printed
    header, written = read_rows(out / "bench.csv")
    assert header == COLUMNS and [r["variant"] for r in written] == ["local", "dense"]
    assert_png(out / "bench.png")


def test_cli_bench_rejects_an_unknown_variant(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--variants", "no-such-variant",
                     "--out", str(tmp_path)]) == 2
    assert "unknown variant" in capsys.readouterr().err


@pytest.mark.cuda
def test_bench_on_cuda_in_bfloat16(tmp_path):
    """On a GPU: SDPA is the baseline, bfloat16 inputs, every figure finite."""
    code = cli.main(["bench", "--device", "cuda", "--quick", "--dtype", "bfloat16",
                     "--variants", "dense", "local", "bigbird", "--out", str(tmp_path)])
    assert code == 0
    torch.cuda.synchronize()
    _, written = read_rows(tmp_path / "bench.csv")
    assert len(written) == 6
    for r in written:
        assert r["note"] == "" and r["device"] == "cuda" and r["dtype"] == "bfloat16"
        for col in ("ms", "dense_ms", "speedup", "peak_mib", "dense_peak_mib"):
            assert float(r[col]) > 0, (r["variant"], col)
        if int(r["N"]) == 256:
            assert float(r["max_err"]) < 5e-2  # bfloat16 against a float32 reference
    assert_png(tmp_path / "bench.png")


def test_mixers_are_timed_against_an_attention_layer_of_the_same_width(tmp_path):
    """Token mixers take x (B, N, C): their rows compare them with MultiHeadAttention(C = H·D)."""
    from attnkit import MIXERS
    from attnkit.bench import mixer_names

    assert mixer_names()[0] == "fourier_mixing" and set(MIXERS) <= set(mixer_names())
    rows = bench(out=tmp_path, variants=["local"], mixers=["fourier_mixing", "fnet"], **QUICK)
    assert [(r["variant"], r["N"]) for r in rows] == [
        ("local", 64), ("fourier_mixing", 64), ("fnet", 64), ("local", 128), ("fourier_mixing", 128), ("fnet", 128)]
    for r in rows[1:3] + rows[4:]:
        assert r["note"] == "" and r["ms"] > 0 and r["dense_ms"] > 0
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["ms"])
    assert rows[1]["max_err"] < 1e-3 and math.isnan(rows[2]["max_err"])  # fft2 vs the DFT matrices
    # a full run includes them; --variants alone does not; an unknown name is refused
    assert [r["variant"] for r in bench(out=tmp_path, variants=["local"], **QUICK)] == ["local", "local"]
    with pytest.raises(ValueError, match="unknown mixer"):
        bench(out=tmp_path, variants=["local"], mixers=["nope"], **QUICK)
