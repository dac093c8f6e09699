"""prune.py: the gem-miner pieces (schedule, straight-through scores, global bottom-k, random masks) on tiny
tensors, and end-to-end runs on a fake 40-image CIFAR-10 at 8x8 pixels."""
import json
import os

import pytest
import torch

import prune
from tests.fake_data import make_cifar10
from utils.checkpoint import load_checkpoint
from utils.cli import run_cli

TINY = ["--subset", "40", "--size", "8", "--bs", "16", "--mine-epochs", "2", "--iter-period", "1",
        "--ft-epochs", "2", "--threads", "1"]


def run(tmp, data_dir, name, *extra):
    out = os.path.join(tmp, name)
    return prune.main(prune.parse_args(TINY + ["--data-dir", data_dir, "--out", out, *extra])), out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_cifar10(str(tmp_path_factory.mktemp("data")), per_batch=8, n_test=10)


@pytest.fixture(scope="module")
def mined(tmp_path_factory, data_dir):
    """One uninterrupted run (mine 2 epochs, fine-tune 2) at 0.59 % kept."""
    tmp = str(tmp_path_factory.mktemp("runs"))
    results, out = run(tmp, data_dir, "full", "--density", "0.59")
    return tmp, results, out


# ------------------------------------------------------------------------------------------ pieces
def test_schedule_is_geometric_and_reaches_the_target_exactly_at_the_last_round():
    n = 268_336
    schedule = prune.prune_schedule(150, 5, n, 0.59)
    assert list(schedule) == list(range(5, 150, 5))  # gem-miner: floor(149 / 5) = 29 rounds, the last at 145
    kept = list(schedule.values())
    assert kept == sorted(kept, reverse=True) and kept[-1] == round(n * 0.0059) == 1583
    ratios = [b / a for a, b in zip(kept, kept[1:])]
    assert max(ratios) - min(ratios) < 1e-3
    assert prune.prune_schedule(2, 5, 1000, 10.0) == {2: 100}  # fewer epochs than a period: one round at the end


def test_straight_through_gradient_is_d_weight_times_mask_d_scores():
    w = torch.randn(4, 3)
    sm = prune.ScoreMask(w)
    sm.flag[0, 0] = 0.0
    grad_out = torch.randn(4, 3)
    effective = sm(w)
    assert torch.equal(effective, w * (sm.scores > 0.5).float() * sm.flag)
    (effective * grad_out).sum().backward()
    assert torch.allclose(sm.scores.grad, grad_out * w * sm.flag)
    assert sm.scores.grad[0, 0] == 0


def test_prune_round_keeps_the_top_scores_over_all_layers_among_survivors():
    a, b = prune.ScoreMask(torch.ones(4)), prune.ScoreMask(torch.ones(3))
    a.scores.data = torch.tensor([0.9, 0.1, 0.8, 0.95])
    b.scores.data = torch.tensor([0.7, 0.99, 0.2])
    a.flag[3] = 0.0  # already pruned: its high score must not bring it back
    prune.prune_round({"a": a, "b": b}, 3)
    assert a.flag.tolist() == [1, 0, 1, 0] and b.flag.tolist() == [0, 1, 0]


def test_random_masks_keep_layer_counts_or_the_global_count():
    masks = {"a": torch.tensor([True, False, False, False, True]), "b": torch.tensor([[True, False], [False, False]])}
    layer = prune.random_mask(masks, "layer", 3, seed=0)
    assert [int(m.sum()) for m in layer.values()] == [2, 1]
    glob = prune.random_mask(masks, "global", 4, seed=0)
    assert sum(int(m.sum()) for m in glob.values()) == 4 and glob["b"].shape == (2, 2)
    assert all(torch.equal(x, y) for x, y in zip(layer.values(), prune.random_mask(masks, "layer", 3, 0).values()))


def test_layer_density_flags_collapsed_layers():
    rows = prune.layer_density({"a": torch.tensor([True, False]), "b": torch.zeros(3, dtype=torch.bool)})
    assert rows[0]["density"] == 50.0 and not rows[0]["collapsed"] and rows[1]["collapsed"]


def test_masked_weights_stay_zero_through_sgd_with_weight_decay():
    net = prune.build_net(10, 0)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    masks = {n: torch.rand_like(m.weight) < 0.1 for n, m in prune.prunable(net)}
    net = prune.masked_net(init, masks, 10, 0)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    for name, module in prune.prunable(net):
        assert torch.all(module.weight[~masks[name]] == 0)
    for name, module in prune.prunable(prune.final_model(net, masks)):
        assert torch.all(module.weight[~masks[name]] == 0) and not hasattr(module, "weight_mask")


def test_signed_constant_init_has_one_magnitude_per_layer():
    for _, module in prune.prunable(prune.build_net(10, 3)):
        assert module.weight.abs().unique().numel() == 1


# ------------------------------------------------------------------------------------------ runs
def test_run_keeps_the_target_density_and_reports_per_run_numbers(mined):
    _, results, out = mined
    n = results["n_weights"]
    assert n == 268_336 and abs(results["n_kept"] - n * 0.0059) <= 1
    mask = load_checkpoint(os.path.join(out, "mask.pt"), kind="prune")
    assert sum(int(m.sum()) for m in mask["masks"].values()) == results["n_kept"]
    assert len(results["curve"]) == 2 and results["best_acc"] == max(c["acc"] for c in results["curve"])
    assert results["time_to_best_s"] > 0 and results["ft_epoch_s"] > 0 and results["mined_acc"] is not None
    assert sum(x["kept"] for x in results["layers"]) == results["n_kept"]
    assert results["collapsed"] == [x["layer"] for x in results["layers"] if x["kept"] == 0]
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["n_kept"] == results["n_kept"]


def test_saved_model_has_exact_zeros_outside_the_mask(mined):
    _, _, out = mined
    saved = load_checkpoint(os.path.join(out, "model.pt"), kind="prune")
    for name, mask in saved["masks"].items():
        weight = saved["model"][f"{name}.weight"]
        assert torch.all(weight[~mask] == 0)


def test_scores_stay_in_the_unit_interval(tmp_path, data_dir):
    _, out = run(str(tmp_path), data_dir, "mine", "--density", "5", "--ft-epochs", "0", "--mine-lr", "5")
    state = load_checkpoint(os.path.join(out, "checkpoint.pt"), kind="prune")
    scores = [v for k, v in state["model"].items() if k.endswith("scores")]
    assert len(scores) == 20 and all(s.min() >= 0 and s.max() <= 1 for s in scores)
    assert any(((s > 0) & (s < 1)).any() for s in scores)


def test_mask_reuse_gives_the_same_mask_and_the_same_fine_tuning(mined, data_dir):
    tmp, full, out = mined
    reused, reused_out = run(tmp, data_dir, "reuse", "--density", "0.59", "--mask", os.path.join(out, "mask.pt"))
    a = load_checkpoint(os.path.join(out, "model.pt"))["masks"]
    b = load_checkpoint(os.path.join(reused_out, "model.pt"))["masks"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [c["acc"] for c in reused["curve"]] == [c["acc"] for c in full["curve"]]
    assert reused["mined_acc"] == full["mined_acc"]


def test_resume_equals_an_uninterrupted_run(mined, data_dir):
    tmp, full, out = mined
    stopped, cut = run(tmp, data_dir, "cut", "--density", "0.59", "--stop-after", "3")
    assert stopped["status"] == "stopped"
    resumed, _ = run(tmp, data_dir, "cut", "--density", "0.59", "--resume")
    assert [c["acc"] for c in resumed["curve"]] == [c["acc"] for c in full["curve"]]
    a = load_checkpoint(os.path.join(out, "model.pt"))["model"]
    b = load_checkpoint(os.path.join(cut, "model.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_random_mask_baseline_keeps_the_mined_layer_counts(mined, data_dir):
    tmp, full, out = mined
    results, _ = run(tmp, data_dir, "random", "--density", "0.59", "--mask", os.path.join(out, "mask.pt"),
                     "--random-mask", "layer", "--ft-epochs", "1")
    assert [x["kept"] for x in results["layers"]] == [x["kept"] for x in full["layers"]]
    assert results["method"] == "random-layer"


@pytest.mark.parametrize("extra, message", [
    (["--density", "0"], "--density"),
    (["--density", "100.5"], "--density"),
    (["--density", "-1"], "--density"),
    (["--ft-loss", "hinge"], "invalid choice"),
    (["--data-dir", "/nonexistent/data"], "cifar10 data not found"),
    (["--mine-epochs", "0"], "--mask"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, data_dir, capsys, extra, message):
    argv = TINY + ["--data-dir", data_dir, "--out", str(tmp_path / "bad"), *extra]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(prune.main, prune.parse_args(argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error:") and "\n" not in err and message in err


def test_a_corrupt_mask_file_exits_2(tmp_path, data_dir, capsys):
    bad = tmp_path / "mask.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(prune.main, prune.parse_args(TINY + ["--data-dir", data_dir, "--out", str(tmp_path / "r"),
                                                     "--mask", str(bad)]))
    assert exit_info.value.code == 2 and "corrupt" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ report builder
def fake_run(root, group, arm, loss, seed, accs, method="gem-miner", k=8.0, m=8.0, ft_epochs=3):
    out = os.path.join(root, group, arm)
    os.makedirs(out)
    curve = [{"epoch": i + 1, "acc": a, "train_s": 10.0 * (i + 1)} for i, a in enumerate(accs)]
    layers = [{"layer": "conv1", "kept": 0, "total": 432, "density": 0.0, "collapsed": True},
              {"layer": "fc", "kept": 5, "total": 640, "density": 0.78, "collapsed": False}]
    res = {"status": "finished", "loss": loss, "k": k, "m": m, "seed": seed, "density": 5.0, "sparsity": 95.0,
           "method": method, "mined_acc": 11.0, "start_acc": 10.0, "acc": accs[-1], "best_acc": max(accs),
           "best_epoch": accs.index(max(accs)) + 1, "time_to_best_s": 10.0 * (accs.index(max(accs)) + 1),
           "ft_epoch_s": 10.0, "mine_epoch_s": 9.0, "n_kept": 5, "n_weights": 1072, "n_train": 40, "n_test": 10,
           "size": 8, "ft_epochs": ft_epochs, "mine_epochs": 2, "curve": curve, "layers": layers,
           "collapsed": ["conv1"]}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f)


def test_report_pairs_rlo_with_ce_by_seed_and_applies_the_verdict_rule(tmp_path):
    from scripts import fig3bc
    runs = str(tmp_path / "runs")
    for seed in range(3):
        group = f"d5_s{seed}"
        fake_run(runs, group, "mine", "ce", seed, [10.0], ft_epochs=0)
        fake_run(runs, group, "ce", "ce", seed, [12.0, 15.0 + seed, 16.0 + seed])
        fake_run(runs, group, "root", "root", seed, [16.0 + seed, 19.0 + seed, 20.0 + seed + 0.1 * seed])
        fake_run(runs, group, "random_ce", "ce", seed, [10.0, 11.0, 12.0], method="random-layer")
    out = tmp_path / "results"
    out.mkdir()
    fig3bc.main(fig3bc.parse_args(["--runs", runs, "--out-dir", str(out)]))
    report = json.loads((out / "fig3bc.json").read_text())
    assert len(report["rows"]) == 9 and all(not isinstance(v, (list, dict)) for r in report["rows"] for v in r.values())
    rlo = {r["seed"]: r for r in report["rows"] if r["arm"] == "RLO k=8 m=8"}
    assert rlo[1]["common_acc"] == 17.0 and rlo[1]["time_to_common_s"] == 10.0  # CE's best; RLO reaches it at once
    verdicts = {(v["key"], v["density"]): v for v in report["verdicts"] if v["arm"] == "RLO k=8 m=8"}
    acc = verdicts[("acc", 5.0)]
    assert acc["verdict"] == "supported" and acc["n"] == 3 and abs(acc["diff"] - 4.1) < 1e-9
    assert verdicts[("time_to_common_s", 5.0)]["verdict"] == "supported"  # 10 s vs 30 s in every seed
    assert report["paper"] and report["paper"][0]["table"] == "fig3bc"
    text = (out / "fig3bc.md").read_text()
    assert "conv1 | 432 | 0.0 (3/3)" in text and (out / "fig3bc.png").exists()
