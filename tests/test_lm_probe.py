"""scripts/lm_probe.py on a tiny trained OPT: the report's rows, the identity layer and the noise copy."""
import json

import torch

from quant.families import FAMILIES
from scripts import lm_probe
from tests import quant_tiny


def test_probe_rows_and_report(tmp_path):
    data, model_dir = quant_tiny.build(str(tmp_path), steps=60)
    args = lm_probe.parse_args([model_dir, "--noise", "0", "2", "--seqlen", "32", "--data-dir", data,
                                "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path),
                                "--max-eval-windows", "0"])
    lm_probe.main(args)
    rows = json.loads((tmp_path / "lm_probe.json").read_text())["rows"]
    assert [r["probe"] for r in rows] == ["full", "skip_layer", "skip_layer", "weight_noise", "weight_noise"]
    full = rows[0]["ppl"]
    assert rows[0]["ratio"] == 1.0 and rows[3]["ppl"] == full  # zero noise changes nothing
    assert rows[4]["ratio"] > 1.2  # noise twice the weights' RMS hurts a model that learned the counting
    assert all(r["ratio"] == r["ppl"] / full for r in rows)
    assert "| skip_layer | 1 |" in (tmp_path / "lm_probe.md").read_text()


def test_noisy_copy_leaves_the_model_and_non_decoder_weights_alone():
    model = quant_tiny.make_model("opt", 14)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    noisy = lm_probe.noisy(model, FAMILIES["opt"], 0.5, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    after = noisy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers." in k and k.endswith(("proj.weight", "fc1.weight", "fc2.weight"))
                           for k in changed)
    rel = (after["model.decoder.layers.0.fc1.weight"] - before["model.decoder.layers.0.fc1.weight"]).std() \
        / before["model.decoder.layers.0.fc1.weight"].pow(2).mean().sqrt()
    assert 0.4 < rel < 0.6


def test_identity_layer_passes_hidden_states():
    x = torch.randn(2, 3, 4)
    assert torch.equal(lm_probe.Identity()(x, attention_mask=None), x)
