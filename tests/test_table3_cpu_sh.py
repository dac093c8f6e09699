"""scripts/table3_cpu.sh's grid stage, with a stand-in `python` that records each run instead of running it."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs `-c` snippets (head_text) with the real interpreter; every other command line is logged and leaves what the
# launcher checks for (results.json in --output-dir/--out), failing for --seed FAIL_SEED on request.
FAKE = """#!/usr/bin/env bash
if [ "$1" = -c ]; then exec {real} "$@"; fi
echo "$*" >> "$CALLS"
out=""
while [ $# -gt 0 ]; do
  case $1 in --output-dir|--out) out=$2; shift ;; --seed) seed=$2 ;; esac
  shift
done
if [ -n "$FAIL_SEED" ] && [ "$seed" = "$FAIL_SEED" ]; then exit 3; fi
if [ -n "$out" ]; then mkdir -p "$out" && echo '{{}}' > "$out/results.json"; fi
"""


def launch(tmp_path, stage, **env):
    """bash scripts/table3_cpu.sh STAGE with OUT=tmp_path/runs, the stand-in python first on PATH, and env."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "python").write_text(FAKE.format(real=sys.executable))
    (bindir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", OUT=str(tmp_path / "runs"), DATA_DIR=str(tmp_path),
               **env)
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "table3_cpu.sh"), stage], env=env,
                          capture_output=True, text=True, timeout=120)


def run_grid(tmp_path, jobs, fail_seed=""):
    out = tmp_path / "runs"
    (out / "base" / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        (out / "base" / "data" / f"{split}.jsonl").write_text(json.dumps({"text": "a b\n\nc d\n\ne f"}) + "\n")
    proc = launch(tmp_path, "grid", JOBS=str(jobs), SEEDS="0 1 2", CALLS=str(tmp_path / f"calls-{jobs}"),
                  FAIL_SEED=fail_seed)
    return proc, out


def cells(out):
    return sorted(os.path.relpath(root, out) for root, _, files in os.walk(out) if "results.json" in files)


@pytest.mark.parametrize("jobs", [1, 3])
def test_grid_runs_every_cell_once_and_resumes(tmp_path, jobs):
    proc, out = run_grid(tmp_path, jobs)
    assert proc.returncode == 0, proc.stderr
    got = cells(out)
    # 3 losses x 3 seeds: fine-tune folder, 16 / 2 / 2-nearest / 3 / 4-bit cells and Hessian statistics
    assert len([c for c in got if c.startswith("quant")]) == 45 and len([c for c in got if c.startswith("hstats")]) == 9
    assert all((out / "ft" / f"{n}-s{s}" / "DONE").exists() for n in ("CE", "RLO-5", "RLO-10") for s in range(3))
    calls = (tmp_path / f"calls-{jobs}").read_text().splitlines()
    assert len(calls) == 9 + 45 + 9
    proc, _ = run_grid(tmp_path, jobs)  # everything is done: nothing runs again
    assert proc.returncode == 0 and len((tmp_path / f"calls-{jobs}").read_text().splitlines()) == len(calls)


def test_parallel_grid_reports_a_failed_seed_and_keeps_the_others(tmp_path):
    proc, out = run_grid(tmp_path, 3, fail_seed="1")
    assert proc.returncode == 1 and "a grid seed failed" in proc.stderr
    done = cells(out)
    assert "quant/CE-s0-w4" in done and "quant/RLO-10-s2-w3" in done
    assert not any("-s1" in c for c in done)
    assert (out / "grid-s1.log").exists()


def test_report_stage_passes_report_flags(tmp_path):
    proc = launch(tmp_path, "report", CALLS=str(tmp_path / "calls"), REPORT_FLAGS="--candidates x --notes n.md")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls").read_text().split() == [
        "-m", "scripts.table3_cpu", "--runs", str(tmp_path / "runs"), "--candidates", "x", "--notes", "n.md"]


@pytest.mark.parametrize("jobs", ["0", "two"])
def test_bad_jobs_exits_2_with_one_line(tmp_path, jobs):
    proc = launch(tmp_path, "grid", JOBS=jobs, CALLS=str(tmp_path / "calls"))
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: JOBS must be a positive integer, not '{jobs}'"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "calls").exists()
