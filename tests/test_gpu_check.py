"""scripts/gpu_check.sh --dry-run: the device check's plan and every part's CPU fallback run end to end."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "dry run" in summary
    for part in ("env", "gpu_tests", "bench_losses", "bench_train", "cifar_grid"):
        assert f"| {part} |" in summary and f"| {part} | " in summary
    assert summary.count("| ok |") >= 5 and "skipped" in summary  # ddp needs 2 GPUs
    assert (out / "losses.json").exists() and (out / "train.json").exists()
