"""scripts/gan_cpu.py: the GAN report from small fake gan.py run directories."""
import json

import pytest

from scripts import gan_cpu
from utils.cli import run_cli


def _fake_run(folder, loss, seed, fids, n_train=200, n_eval=64):
    folder.mkdir(parents=True)
    metrics = [{"step": 10 * i, "train_time_s": 2.0 * i, "fid": f, "kid": f / 10, "g_loss": 1.0 + i}
               for i, f in enumerate(fids)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    config = {"loss": loss, "k": 2.0, "seed": seed, "dataset": "mnist5k", "n_train": n_train, "n_eval": n_eval,
              "eval_every": 10, "argv": ["gan.py", "--loss", loss, "--seed", str(seed)]}
    (folder / "config.json").write_text(json.dumps(config))
    best = min(metrics, key=lambda m: m["fid"])
    results = {"loss": loss, "k": 2.0, "seed": seed, "steps": metrics[-1]["step"], "train_time_s": 8.0,
               "final_fid": fids[-1], "final_kid": fids[-1] / 10, "best_fid": best["fid"],
               "best_fid_step": best["step"], "feature_net_accuracy": 0.9, "kid_units": "raw test units",
               "samples": "samples_final.png"}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "samples_final.png").write_bytes(b"png")


def _setting(root, rlo_offset, seeds=(0, 1, 2)):
    for seed in seeds:
        _fake_run(root / f"ce_s{seed}", "ce", seed, [900, 300, 150 + seed, 140 + seed, 130 + seed])
        _fake_run(root / f"rlo_s{seed}", "rlo", seed,
                  [900, 300, 150 + seed + rlo_offset, 140 + seed + rlo_offset, 130 + seed + rlo_offset + 0.1 * seed])


def test_report_reaches_each_verdict_and_schema(tmp_path):
    _setting(tmp_path / "better", -20)
    _setting(tmp_path / "worse", +20)
    out = tmp_path / "results"
    out.mkdir()
    args = gan_cpu.parse_args([str(tmp_path / "better"), str(tmp_path / "worse"), "--out-dir", str(out),
                               "--no-figures"])
    gan_cpu.main(args)
    doc = json.loads((out / "gan_cpu.json").read_text())
    assert set(doc) == {"rows", "paper", "verdicts"}
    verdicts = {v["claim"]: v["verdict"] for v in doc["verdicts"]}
    assert verdicts[f"FID rlo - ce, {tmp_path / 'better'}"] == "supported"
    assert verdicts[f"FID rlo - ce, {tmp_path / 'worse'}"] == "not supported"
    assert verdicts[gan_cpu.CLAIM] == "not supported"
    assert {p["fid"] for p in doc["paper"]} == {81.2, 89.7}
    assert len(doc["rows"]) == 12 and doc["rows"][0]["n_eval"] == 64
    text = (out / "gan_cpu.md").read_text()
    assert "64 generated vs 64 real images" in text and "raw test units" in text and "nan" not in text
    assert "seeds 0, 1, 2" in text


def test_one_seed_is_inconclusive_and_prints_no_nan(tmp_path):
    _setting(tmp_path / "one", -20, seeds=(0,))
    out = tmp_path / "results"
    out.mkdir()
    gan_cpu.main(gan_cpu.parse_args([str(tmp_path / "one"), "--out-dir", str(out)]))
    doc = json.loads((out / "gan_cpu.json").read_text())
    assert doc["verdicts"][-1]["verdict"] == "inconclusive"
    text = (out / "gan_cpu.md").read_text()
    assert "nan" not in text.lower() and "| ce | 1 | 140.00 |" in text  # one seed: its value, no "± nan"
    assert "[gan_samples_n200_rlo_s0.png](gan_samples_n200_rlo_s0.png)" in text
    assert (out / "gan_samples_n200_rlo_s0.png").exists() and (out / "gan_score_vs_time.png").exists()


def test_no_runs_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(gan_cpu.main, gan_cpu.parse_args([str(tmp_path)]))
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("error: ")
