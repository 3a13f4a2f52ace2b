"""scripts/peer_bench.py without its peers: the table, the docs section and splicing on synthetic
rows, the agreement check, one case run on stand-in functions, and the re-exec inside main()."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "peer_bench.py"
PEER_MODULES = ("local_attention", "linformer", "performer_pytorch", "reformer_pytorch",
                "routing_transformer", "sinkhorn_transformer")


@pytest.fixture(scope="module")
def pb():
    """The script as a module: importing it installs nothing and re-executes nothing."""
    spec = importlib.util.spec_from_file_location("peer_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_bench"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["peer_bench"]
    return module


def _row(comparison="`performer(m=256)` vs `FastAttention`", N=4096, threads=1, run=1, ratio=0.72,
         case="performer", kit_ms=10.0, peer_ms=20.0, **extra):
    return {"threads": threads, "run": run, "case": case, "comparison": comparison, "N": N,
            "keys": "256 / 256", "first_kit_s": 0.5, "first_peer_s": 0.25, "max_diff": 1e-6,
            "tolerance": 1e-5, "agreement": "1.0e-06 (tol 1.0e-05)", "kit_ms": kit_ms, "peer_ms": peer_ms,
            "kit_over_peer": ratio, "kit_mib": 12.0, "peer_mib": 3.25, **extra}


def test_import_leaves_the_peers_alone(pb):
    assert not any(name.split(".")[0] in PEER_MODULES for name in sys.modules)
    assert set(pb.BUILDERS) == set(pb.CASES) == set(pb.NOTES)


def test_table_one_line_per_comparison_length_and_threads(pb):
    rows = [_row(N=8192, run=1, ratio=0.70, kit_ms=11.0), _row(N=4096, run=1, ratio=0.72),
            _row(N=4096, threads=2, run=1, ratio=0.80), _row(comparison="`x` vs `y`", ratio=1.5),
            _row(N=8192, run=2, ratio=0.77, kit_ms=99.0), _row(N=4096, run=2, ratio=0.75),
            _row(N=4096, threads=2, run=2, ratio=0.85), _row(comparison="`x` vs `y`", run=2, ratio=1.25)]
    lines = pb.format_table(rows).splitlines()
    assert "run 1 / 2" in lines[0]
    assert len(lines) == 2 + 4
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    # comparisons in order of first appearance, then N, then threads
    per, x = "`performer(m=256)` vs `FastAttention`", "`x` vs `y`"
    assert [tuple(b[:3]) for b in body] == [(per, "4096", "1"), (per, "4096", "2"), (per, "8192", "1"),
                                            (x, "4096", "1")]
    assert body[0][5] == "0.72 / 0.75" and body[1][5] == "0.80 / 0.85" and body[3][5] == "1.50 / 1.25"
    assert body[2][6] == "11.0"  # ms of run 1, not run 2
    assert body[0][7] == "20.0" and body[0][8] == "12 / 3.2"
    assert body[0][4] == "1.0e-06 (tol 1.0e-05)"


def _meta(**extra):
    return {"machine": "Test CPU 9000", "cores": 2, "python": "3.11.7", "torch": "2.13.0+cpu",
            "peers": {"linformer": "0.2.3", "local-attention": "1.11.2"}, "date": "2026-12-03",
            "command": "python scripts/peer_bench.py --runs 2", "rounds": 9, **extra}


def test_section_names_machine_versions_method_and_only_its_cases(pb):
    flex_rows = [_row(comparison=pb.FLEX_LABEL, case="local", N=2048, ratio=r, run=run)
                 for r, run in ((1.05, 1), (1.10, 2))]
    section = pb.format_section(_meta(), [*flex_rows, _row()])
    for text in ("Test CPU 9000, 2 cores", "Python 3.11.7", "torch 2.13.0+cpu", "`linformer` 0.2.3",
                 "`local-attention` 1.11.2", "2026-12-03", "MALLOC_MMAP_THRESHOLD_=65536",
                 "9 interleaved rounds", "median of the per-round ratios", "resident_peak",
                 "--runs 2", "| 1.05 / 1.10 |"):
        assert text in section, text
    assert pb.NOTES["performer"] in section and pb.NOTES["local"] in section
    assert pb.NOTES["lsh"] not in section
    assert "kit 0.5 s, direct 0.25 s" in section
    assert "at most 1.10 (N=2048, 1 thread(s), run 2): within the 1.2× target" in section


def test_flex_target_missed_is_said(pb):
    notes = pb.flex_notes([_row(comparison=pb.FLEX_LABEL, case="local", ratio=1.31)])
    assert "at most 1.31" in notes[1] and "NOT within" in notes[1]
    assert pb.flex_notes([_row()]) == []


DOC = f"# Benchmarks\n\nintro\n{{start}}\nold table\n| a |\n{{end}}\n## After\ntail\n"


def test_splice_replaces_only_between_the_markers(pb):
    text = DOC.format(start=pb.START, end=pb.END)
    once = pb.splice(text, "### New\n\n| b |\n")
    assert once == f"# Benchmarks\n\nintro\n{pb.START}\n### New\n\n| b |\n{pb.END}\n## After\ntail\n"
    assert pb.splice(once, "### New\n\n| b |") == once


@pytest.mark.parametrize("start, end", [("", "{end}"), ("{start}", ""), ("{end}", "{start}"),
                                        ("{start}\n{start}", "{end}")])
def test_missing_or_misplaced_markers_are_reported(pb, start, end):
    text = DOC.format(start=start, end=end).format(start=pb.START, end=pb.END)
    with pytest.raises(pb.MarkerError) as err:
        pb.splice(text, "### New")
    assert pb.START in str(err.value) and pb.END in str(err.value) and "GPU check" in str(err.value)


def test_write_docs_leaves_a_file_without_markers_untouched(pb, tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("no markers here\n")
    with pytest.raises(pb.MarkerError):
        pb.write_docs(path, "### New")
    assert path.read_text() == "no markers here\n"
    path.write_text(DOC.format(start=pb.START, end=pb.END))
    pb.write_docs(path, "### New")
    assert "### New" in path.read_text() and "old table" not in path.read_text()


def test_check_agreement(pb):
    peer = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    diff, tol = pb.check_agreement("same", peer + 1e-6, peer, rtol=1e-5)
    assert diff == pytest.approx(1e-6, rel=0.1) and tol == pytest.approx(2e-5)
    for kit in (peer + 1e-4, peer.T.contiguous()[:1], peer.masked_fill(peer == 0, float("nan"))):
        with pytest.raises(pb.AgreementError):
            pb.check_agreement("differs", kit, peer, rtol=1e-5)


def _pair(pb, shift: float, rtol=1e-5):
    x = torch.linspace(-1, 1, 64).view(1, 1, 16, 4)
    return pb.Pair("fake", f"shift {shift}", "4 / 4", lambda: x * 2, lambda: x * 2 + shift, rtol=rtol,
                   why="made up")


def test_run_case_rows_and_a_disagreement_raises(pb, monkeypatch):
    monkeypatch.setitem(pb.BUILDERS, "fake", lambda N: [_pair(pb, 0.0), _pair(pb, 1.0, rtol=None)])
    rows = pb.run_case("fake", [16], rounds=3, context={"threads": 1, "run": 1})
    assert [r["comparison"] for r in rows] == ["shift 0.0", "shift 1.0"]
    assert rows[0]["max_diff"] == 0.0 and rows[0]["agreement"].startswith("0.0e+00")
    assert rows[1]["agreement"] == "not comparable (made up)"
    assert all(r["kit_ms"] > 0 and r["peer_ms"] > 0 for r in rows)
    for r in rows:
        r.update(kit_mib=1.0, peer_mib=2.0)  # from the memory child, in main
    assert pb.format_table(rows).count("\n") == 3
    monkeypatch.setitem(pb.BUILDERS, "fake", lambda N: [_pair(pb, 1e-3)])
    with pytest.raises(pb.AgreementError, match="shift 0.001"):
        pb.run_case("fake", [16], rounds=3, context={"threads": 1, "run": 1})


def test_memory_is_measured_in_a_child_with_the_mmap_threshold(pb, monkeypatch, tmp_path):
    """The parent asks a --memory-only child started with MMAP_ENV for the peaks and reads its
    tagged lines; the child's mode refuses to run without that environment; memory() measures
    each side of every pair."""
    monkeypatch.setitem(pb.CASES, "fake", [16])
    monkeypatch.setitem(pb.BUILDERS, "fake", lambda N: [_pair(pb, 0.0)])
    args = pb.parse_args(["--cases", "fake", "--threads", "1"])
    (row,) = pb.memory(args)
    assert row["comparison"] == "shift 0.0" and row["N"] == 16 and row["threads"] == 1
    assert row["kit_mib"] >= 0 and row["peer_mib"] >= 0

    seen = {}

    def run(argv, env, capture_output, text):
        seen.update(argv=argv, env=env)
        line = pb.MEMORY_TAG + json.dumps({"comparison": "c", "N": 16, "threads": 1, "kit_mib": 1.5, "peer_mib": 3.0})
        return subprocess.CompletedProcess(argv, 0, stdout=f"noise\n{line}\n", stderr="")
    monkeypatch.setattr(pb.subprocess, "run", run)
    peaks = pb.memory_in_child(args, tmp_path)
    assert peaks == {("c", 16, 1): {"comparison": "c", "N": 16, "threads": 1, "kit_mib": 1.5, "peer_mib": 3.0}}
    assert "--memory-only" in seen["argv"] and str(tmp_path) in seen["argv"]
    assert all(seen["env"][key] == value for key, value in pb.MMAP_ENV.items())

    for key in pb.MMAP_ENV:
        monkeypatch.delenv(key, raising=False)
    assert pb.main(["--memory-only", "--peer-dir", str(tmp_path), "--cases", "fake"]) == 2
