"""``attnkit gpu-check`` / ``make gpu-check``: the no-GPU exit, the report, the targets, the CPU smoke
of the GPU benchmark, the ``--gpu`` grading flag. The real GPU run is the one CUDA-marked test."""
from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnkit.bench import GPU_COLUMNS, GPU_TOLERANCE, gpu_cases, run_gpu_bench, write_csv
from attnkit.fixed import local_reference
from autograder import gpu_check as gc

ROOT = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()
NO_GPU_LINE = "no CUDA GPU: nothing to check"
# What a bare GPU machine lacks: the check must run (and say "no GPU" here) without them.
_BLOCKED = ("nbgrader", "nbformat", "nbclient", "jupytext", "ipykernel", "jupyter_client", "psycopg2",
            "distributed")
_BARE = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {_BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a bare GPU machine)")
sys.meta_path.insert(0, Block())
from autograder.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": f"{ROOT / 'lib'}:{ROOT}"}


def _fake_rows() -> list[dict]:
    """Rows as run_gpu_bench writes them: SDPA, local (a miss at 64K), a broken Triton window."""
    def row(variant, N, ms, sdpa_ms, status="ok", note="", rel_err=float("nan")):
        return {"variant": variant, "N": N, "device": "cuda", "dtype": "bfloat16", "B": 1, "H": 16, "D": 64,
                "kwargs": "window=256" if variant != "sdpa" else "", "status": status, "first_call_s": 1.5,
                "ms": ms, "sdpa_ms": sdpa_ms, "ratio": sdpa_ms / ms, "rel_err": rel_err, "note": note}
    nan = float("nan")
    return [row("sdpa", 16384, 2.32, 2.32), row("local", 16384, 0.15, 2.32, rel_err=3e-3),
            row("flex_window", 16384, 0.16, 2.32),
            row("triton_window", 16384, nan, 2.32, "error", "ImportError: no module triton_window"),
            row("sdpa", 65536, 36.8, 36.8), row("local", 65536, 0.9, 36.8),
            row("flex_window", 65536, 0.6, 36.8),
            row("triton_window", 65536, nan, 36.8, "skipped", "not run: it failed at N=16384")]


# ---------------------------------------------------------------- no GPU: a clear line, exit 3

@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_no_gpu_exits_3_with_a_clear_line_even_without_nbgrader(tmp_path):
    cmd = [sys.executable, "-c", _BARE, "gpu-check", "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == gc.NO_GPU == 3, done.stderr
    assert NO_GPU_LINE in done.stdout
    assert not (tmp_path / "out").exists()  # nothing written, nothing half-done


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_attnkit_gpu_check_command_exits_3(tmp_path):
    script = Path(sys.executable).with_name("attnkit")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "autograder.cli"]
    done = subprocess.run(cmd + ["gpu-check", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 3 and NO_GPU_LINE in done.stdout, done.stdout + done.stderr


@pytest.mark.skipif(HAS_CUDA or shutil.which("make") is None, reason="needs make and no GPU")
def test_make_gpu_check_reports_error_3(tmp_path):
    done = subprocess.run(["make", "gpu-check", f"PYTHON={sys.executable}",
                           f"GPU_CHECK_ARGS=--out {tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and NO_GPU_LINE in done.stdout
    assert re.search(r"gpu-check\] Error 3", done.stderr), done.stderr  # make itself exits 2
    no_torch = tmp_path / "python-without-torch"
    no_torch.write_text("#!/bin/sh\n[ \"$1\" = -c ] && case \"$2\" in *torch*) exit 1;; esac\nexit 0\n")
    no_torch.chmod(0o755)
    done = subprocess.run(["make", "gpu-check", f"PYTHON={no_torch}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "has no torch: nothing to check" in done.stdout and "Error 3" in done.stderr


def test_make_target_never_goes_through_the_venv():
    """The stamp pip-installs the kit, whose torch pin would bring a second PyTorch."""
    text = (ROOT / "Makefile").read_text()
    rule = re.search(r"^gpu-check:(.*?)(?=^\S)", text, re.M | re.S).group(0)
    for forbidden in ("$(STAMP)", "$(BIN)", "$(VENV)", ".venv", "pip", "$(SYSSTAMP)", "venv"):
        assert forbidden not in rule, forbidden
    assert "-m autograder.cli gpu-check" in rule and "PYTHONPATH=" in rule
    if shutil.which("make"):
        dry = subprocess.run(["make", "-n", "gpu-check", "PYTHON=python3"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60).stdout
        assert "pip" not in dry and ".venv" not in dry and "gpu-check" in dry
    assert "gpu-check" in re.search(r"^help:(.*?)(?=^\S)", text, re.M | re.S).group(0)


# ---------------------------------------------------------------- targets and the report

def test_targets_pass_miss_and_not_measured():
    verdicts = {v["target"]: v for v in gc.evaluate(_fake_rows())}
    local16 = verdicts["local >= 14x sdpa at N=16384"]
    assert local16["verdict"] == "pass" and local16["measured"] == pytest.approx(2.32 / 0.15)
    assert verdicts["local >= 60x sdpa at N=65536"]["verdict"] == "missed"  # 40.9x
    assert verdicts["triton_window >= 1x flex_window at N=16384"]["verdict"] == "not measured"  # errored
    assert verdicts["longformer >= 3.8x sdpa at N=16384"]["verdict"] == "not measured"  # not in the rows
    assert {str(t) for t in gc.TARGETS} == set(verdicts)
    fast = [dict(r, ms=0.1) if r["variant"] == "triton_window" else r for r in _fake_rows()]
    fast = [dict(r, status="ok") for r in fast]
    assert {v["target"]: v["verdict"] for v in gc.evaluate(fast)}[
        "triton_window >= 1x flex_window at N=65536"] == "pass"


def test_report_csv_and_plot_from_fake_rows(tmp_path):
    rows = _fake_rows()
    steps = [gc.Step("CUDA tests", "ok", "pytest exited 0: 40 tests",
                     ["left out tests/test_x.py: import nbformat"]),
             gc.bench_step(rows), gc.Step("grading (demo --gpu)", "skipped", "needs nbgrader")]
    assert steps[1].status == "failed" and len(steps[1].details) == 2
    machine = {"GPU": "NVIDIA H200 (132 SMs)", "torch": "2.11.0+cu130", "CUDA": "13.0", "triton": "3.6.0",
               "commit": "abc1234"}
    report = gc.write_report(tmp_path / "report.md", machine=machine, steps=steps, rows=rows,
                             verdicts=gc.evaluate(rows), seconds=321, exit_code=1).read_text()
    for text in ("NVIDIA H200", "2.11.0+cu130", "abc1234", "Exit status 1", "CUDA tests**: OK",
                 "GPU benchmark**: FAILED", "grading (demo --gpu)**: SKIPPED: needs nbgrader",
                 "left out tests/test_x.py",
                 "| local | 16384 | window=256 | 1.50 | 0.150 | 2.320 | 15.47 | 3.0e-03 | ok |",
                 "error: ImportError", "| local >= 60x sdpa at N=65536 | 40.89 | missed |", "not measured"):
        assert text in report, text
    path = write_csv(tmp_path / "results.csv", rows, GPU_COLUMNS)
    with path.open() as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == GPU_COLUMNS and len(back) == len(rows) and back[3]["ms"] == "nan"
    png = gc.plot_ratios(rows, tmp_path / "ratios.png", title="fake")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_step_and_exit_code_rules():
    ok = [dict(r, status="ok", note="") for r in _fake_rows()]
    assert gc.bench_step(ok).status == "ok"
    assert gc.bench_step([]).status == "failed"  # nothing measured is not a pass
    skipped = [dict(r, status="skipped", note="the time budget was spent") for r in ok]
    assert gc.bench_step(skipped).status == "failed"


# ---------------------------------------------------------------- the benchmark on the CPU, tiny sizes

def test_gpu_bench_runs_on_the_cpu_at_tiny_sizes():
    lines = []
    rows = run_gpu_bench(device="cpu", ns=(64, 128), variants=("local", "linformer", "bellcurve"),
                         dtype="float32", heads=2, dim=16, log=lines.append)
    assert [(r["variant"], r["N"]) for r in rows] == [(v, n) for n in (64, 128)
                                                      for v in ("sdpa", "local", "linformer", "bellcurve")]
    assert all(r["status"] == "ok" and r["note"] == "" for r in rows), rows
    assert all(r["ms"] > 0 and r["first_call_s"] >= 0 and r["ratio"] > 0 for r in rows)
    assert all(r["ratio"] == pytest.approx(r["sdpa_ms"] / r["ms"]) for r in rows)
    small = [r for r in rows if r["N"] == 64]
    assert all(r["rel_err"] <= GPU_TOLERANCE["float32"] for r in small)  # checked at the smallest N only
    assert all(math.isnan(r["rel_err"]) for r in rows if r["N"] == 128)
    assert len(lines) == len(rows) and set(GPU_COLUMNS) == set(rows[0])


def test_gpu_bench_reports_a_wrong_or_broken_case_and_goes_on():
    def broken(q, k, v, **kw):
        raise RuntimeError("kernel launch failed")

    cases = {**{n: gpu_cases()[n] for n in ("sdpa", "local")},
             "wrong": (lambda q, k, v, window: v.clone(), local_reference, {"window": 4}),
             "broken": (broken, local_reference, {"window": 4})}
    rows = run_gpu_bench(device="cpu", ns=(32, 64), dtype="float32", heads=1, dim=8, cases=cases, log=None)
    by = {(r["variant"], r["N"]): r for r in rows}
    assert by[("wrong", 32)]["status"] == "error" and "wrong output: relative error" in by[("wrong", 32)]["note"]
    assert by[("wrong", 32)]["rel_err"] > GPU_TOLERANCE["float32"]
    assert by[("broken", 32)]["note"] == "RuntimeError: kernel launch failed"
    assert by[("wrong", 64)]["status"] == "skipped" and "failed at N=32" in by[("wrong", 64)]["note"]
    assert by[("local", 64)]["status"] == "ok"  # the others go on
    assert gc.bench_step(rows).status == "failed"


def test_gpu_bench_skips_past_the_deadline_and_refuses_unknown_cases():
    rows = run_gpu_bench(device="cpu", ns=(32,), variants=("local",), dtype="float32", heads=1, dim=8,
                         deadline=0.0, log=None)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert rows[0]["note"] == "the time budget was spent"
    with pytest.raises(ValueError, match="unknown GPU case"):
        run_gpu_bench(device="cpu", ns=(32,), variants=("nope",), log=None)


def test_the_triton_window_case_under_the_interpreter():
    """The Triton case's wiring (import, call, reference) on CPU tensors, in a fresh process: Triton's
    interpreter must be switched on before triton is imported."""
    code = """
from attnkit.notebook import triton_device
assert triton_device() == "cpu"
from attnkit.bench import gpu_cases, run_gpu_bench
fn, ref, _ = gpu_cases()["triton_window"]
rows = run_gpu_bench(device="cpu", ns=(48,), dtype="float32", heads=1, dim=16, log=None,
                     cases={"sdpa": gpu_cases()["sdpa"], "triton_window": (fn, ref, {"window": 8})})
print(rows[1]["status"], rows[1]["rel_err"], rows[1]["note"])
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    status, err, *_ = done.stdout.split() or ["no output", done.stderr[-500:]]
    assert status == "ok" and float(err) < 1e-5, done.stdout + done.stderr


def test_gpu_cases_cover_the_issue():
    assert set(gpu_cases()) == {"sdpa", "local", "longformer", "bigbird", "linformer", "performer",
                                "bellcurve", "flex_window", "triton_window"}
    assert gpu_cases()["local"][2] == {"window": 256} and gpu_cases()["bigbird"][2]["block"] == 128
    assert {t.variant for t in gc.TARGETS} <= set(gpu_cases())


# ---------------------------------------------------------------- pieces of the GPU run

def test_unimportable_lists_modules_whose_imports_fail(tmp_path):
    (tmp_path / "test_ok.py").write_text("import json\nfrom os import path\n")
    (tmp_path / "test_bad.py").write_text("import json\nfrom no_such_module_xyz import thing\n")
    bad = gc.unimportable([str(tmp_path / "test_ok.py"), str(tmp_path / "test_bad.py")], tests=tmp_path)
    assert list(bad) == [str(tmp_path / "test_bad.py")]
    assert "no_such_module_xyz" in bad[str(tmp_path / "test_bad.py")]


def test_cuda_tests_step_runs_pytest_and_reads_its_report(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    head = "import pytest\n\n\n"
    (tests / "test_pass.py").write_text(head + "@pytest.mark.cuda\ndef test_a():\n    pass\n\n\n"
                                        "def test_not_cuda():\n    assert False\n")
    (tests / "test_fail.py").write_text(head + "@pytest.mark.cuda\ndef test_b():\n    assert False\n")
    (tests / "test_needs.py").write_text(head + "import no_such_module_xyz\n")
    files = [str(tests / f"test_{n}.py") for n in ("pass", "fail", "needs")]
    step = gc.run_cuda_tests(tmp_path, timeout=300, files=files)
    assert step.status == "failed" and "pytest exited 1: 2 tests, 1 failures" in step.summary, step
    assert any(d.startswith("left out") and "no_such_module_xyz" in d for d in step.details)
    assert any(d.startswith("FAILED") and "test_b" in d for d in step.details)
    assert "1 passed" in (tmp_path / "pytest.log").read_text()
    step = gc.run_cuda_tests(tmp_path, timeout=300, files=files[:1])
    assert step.status == "ok" and "0 modules left out" in step.summary, step
    (tests / "test_slow.py").write_text(head + "import time\n\n\n@pytest.mark.cuda\ndef test_c():\n"
                                        "    time.sleep(60)\n")
    step = gc.run_cuda_tests(tmp_path, timeout=3, files=[str(tests / "test_slow.py")])
    assert step.status == "failed" and step.summary.startswith("killed after 3 s")


def test_optional_packages_pin_everything_installed(tmp_path):
    pins = gc.constraints().splitlines()
    assert f"torch=={torch.__version__}" in pins
    step = gc.install_optional(tmp_path / "no-wheels", tmp_path)
    if gc.missing_optional():
        assert step.status == "skipped" and "no wheelhouse" in step.summary
    else:
        assert step.status == "ok" and "all present" in step.summary


def test_grade_and_demo_take_gpu_and_it_reaches_the_sandbox_config(tmp_path):
    from autograder.cli import limit_overrides, parser
    from autograder.config import config_text, load_config, write_config
    from autograder.limits import Limits

    args = parser().parse_args(["grade", "a1_attention_basics", "subs", "--gpu"])
    assert args.gpu and limit_overrides(args) == {"memory": None}  # CUDA needs the address space
    args = parser().parse_args(["demo", "--gpu", "--memory", "64"])
    assert args.gpu and limit_overrides(args) == {"memory": 64 << 30}
    assert not parser().parse_args(["demo"]).gpu
    write_config(tmp_path, db_url="sqlite://", timeout=60, pattern="x", gpu=True,
                 limits=Limits.for_cell_timeout(60, memory=None))
    config = load_config(tmp_path)
    assert config.SandboxKernelManager.gpu is True and config.SandboxKernelManager.memory is None
    assert "c.SandboxKernelManager.gpu = False" in config_text(tmp_path, db_url="sqlite://", timeout=60,
                                                               pattern="x")


def test_the_whole_command_on_a_pretend_gpu(tmp_path, monkeypatch, capsys):
    """gpu_check's steps, report and exit status, with the GPU parts stood in for by the CPU."""
    import functools

    import attnkit.bench

    real = attnkit.bench.run_gpu_bench
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gc, "machine_info", lambda: {"GPU": "Pretend GPU", "torch": torch.__version__,
                                                     "triton": "x", "commit": "abc"})
    monkeypatch.setattr(attnkit.bench, "run_gpu_bench", lambda ns, variants, deadline: real(
        device="cpu", ns=ns, variants=variants, deadline=deadline, dtype="float32", heads=1, dim=8, log=None))
    monkeypatch.setattr(gc, "run_cuda_tests", lambda out, timeout: gc.Step("CUDA tests", "ok", "3 passed"))
    run = functools.partial(gc.gpu_check, out=tmp_path, ns=[32, 64], variants=["local"], wheels=tmp_path / "w",
                            skip=("grade",))
    assert run() == 0
    printed = capsys.readouterr().out
    assert "gpu-check: PASSED (exit 0" in printed
    assert "target local >= 14x sdpa at N=16384: — NOT MEASURED" in printed
    report = (tmp_path / "report.md").read_text()
    assert "Pretend GPU" in report and "| local | 64 |" in report and "SKIPPED: --skip grade" in report
    assert (tmp_path / "results.csv").exists() and (tmp_path / "ratios.png").exists()
    monkeypatch.setattr(gc, "run_cuda_tests", lambda out, timeout: gc.Step("CUDA tests", "failed", "1 failed"))
    assert run() == 1 and "gpu-check: FAILED: CUDA tests (exit 1" in capsys.readouterr().out
    monkeypatch.setattr(gc, "plot_ratios", lambda *a, **k: 1 / 0)
    assert run() == 1 and "plot: FAILED: ZeroDivisionError" in capsys.readouterr().out
    assert (tmp_path / "report.md").exists()
    assert run(variants=["nope"]) == 2 and "unknown case(s) ['nope']" in capsys.readouterr().err


# ---------------------------------------------------------------- on a GPU

@pytest.mark.cuda
def test_gpu_bench_on_cuda_at_one_small_n(tmp_path):
    """Every case at N=1024 on the GPU (gpu-check's benchmark checks them at 4096): each output
    within tolerance of its reference, timed."""
    rows = run_gpu_bench(ns=(1024,), log=None)
    assert [r["status"] for r in rows] == ["ok"] * len(gpu_cases()), [(r["variant"], r["note"]) for r in rows]
    assert all(r["rel_err"] <= GPU_TOLERANCE["bfloat16"] and r["ms"] > 0 for r in rows)
    write_csv(tmp_path / "results.csv", rows, GPU_COLUMNS)
    gc.plot_ratios(rows, tmp_path / "ratios.png")
