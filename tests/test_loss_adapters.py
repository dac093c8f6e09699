"""Adapters of losses.py: the nn.Module, transformers' Trainer(compute_loss_func=...), and train.py's
Mixup / CutMix (timm) feeding the losses probability targets."""
import math

import pytest
import torch
import torch.nn.functional as F

import losses as L
import train
from utils.cli import UsageError


# --------------------------------------------------------------------------------------- modules
def test_loss_module_is_a_drop_in_for_cross_entropy_loss():
    x, t = torch.randn(10, 4, requires_grad=True), torch.randint(0, 4, (10,))
    w = torch.rand(4) + 0.1
    ours = L.Loss("ce", weight=w, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    assert "weight" in ours.state_dict()
    assert ours.double().weight.dtype == torch.float64  # a buffer: follows .to()
    torch.testing.assert_close(L.Loss("root", k=4, m=2)(x, t), L.root_loss(x, t, k=4, m=2))
    torch.testing.assert_close(L.RootedLoss()(x, t, reduction="sum"), L.root_loss(x, t, reduction="sum"))
    assert "root" in repr(L.RootedLoss(k=5, m=5)) and "k=5" in repr(L.RootedLoss(k=5, m=5))


def test_loss_module_bad_arguments():
    with pytest.raises(ValueError, match="unknown argument"):
        L.Loss("root", kk=3)
    with pytest.raises(ValueError, match="does not take class weights"):
        L.Loss("square", weight=torch.ones(3))
    with pytest.raises(ValueError, match="k must be"):
        L.RootedLoss(k=0)


# ------------------------------------------------------------------------------- HF Trainer
def _tiny_lm():
    from transformers import OPTConfig, OPTForCausalLM
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       max_position_embeddings=32, word_embed_proj_dim=16)
    return OPTForCausalLM(config)


def _lm_batch(n=3, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 40, (n, length), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100  # e.g. a prompt that does not count
    return ids, labels


def test_causal_lm_loss_matches_the_models_own_loss():
    model = _tiny_lm().eval()  # no dropout: both forwards see the same logits
    ids, labels = _lm_batch()
    out = model(input_ids=ids)
    own = model(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(L.causal_lm_loss("ce")(out, labels), own)
    n = int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(L.causal_lm_loss("ce")(out, labels, num_items_in_batch=torch.tensor(2 * n)),
                               own / 2)
    logits, targets = out.logits[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1)
    torch.testing.assert_close(L.causal_lm_loss("root", k=5, m=5)(out, labels),
                               L.root_loss(logits, targets, k=5, m=5))


def test_trainer_with_compute_loss_func_and_gradient_accumulation(tmp_path):
    from transformers import Trainer, TrainingArguments
    ids, labels = _lm_batch(n=4)
    data = [{"input_ids": i, "labels": lab} for i, lab in zip(ids, labels)]
    seen = []
    rlo = L.causal_lm_loss("root", k=5, m=5)

    def loss_func(outputs, labels, num_items_in_batch=None):
        seen.append(num_items_in_batch)
        return rlo(outputs, labels, num_items_in_batch)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=1,
                             gradient_accumulation_steps=2, report_to=[], use_cpu=True, logging_steps=1,
                             save_strategy="no", learning_rate=1e-3)
    result = Trainer(model=_tiny_lm(), args=args, train_dataset=data, compute_loss_func=loss_func).train()
    assert math.isfinite(result.training_loss)
    # each micro-batch of an accumulated step gets the token count of the step's two rows together
    assert len(seen) == 4 and int(seen[0]) == int(seen[1]) and int(seen[2]) == int(seen[3])
    assert int(seen[0]) + int(seen[2]) == int((labels[:, 1:] != -100).sum())


# -------------------------------------------------------------------------- train.py Mixup / CutMix
TINY = ["--dataset", "digits", "--net", "res18_mini", "--size", "8", "--bs", "15", "--subset", "30",
        "--test-subset", "16", "--workers", "0", "--lr", "1e-3", "--device", "cpu", "--threads", "1",
        "--n_epochs", "1"]


def test_mix_batch_gives_soft_targets_and_leaves_an_odd_last_image():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 4, 4)
    t = torch.tensor([0, 1, 2, 1, 0])
    args = train.parse_args(["--mixup", "0.8", "--cutmix", "1.0"])
    mixed, soft = train.mix_batch(args, x.clone(), t, 3)
    assert soft.shape == (5, 3)
    torch.testing.assert_close(soft.sum(1), torch.ones(5))
    torch.testing.assert_close(soft[4], F.one_hot(t[4], 3).float())
    torch.testing.assert_close(mixed[4], x[4])
    assert not torch.equal(mixed[:4], x[:4])


def test_train_end_to_end_with_mixup_and_cutmix(tmp_path):
    result = train.main(train.parse_args([*TINY, "--loss", "root", "--mixup", "0.8", "--cutmix", "1.0",
                                          "--out", str(tmp_path / "run")]))
    assert result["status"] == "finished" and math.isfinite(result["final_val_loss"])


@pytest.mark.parametrize("extra, needle", [(["--mixup", "-1"], "must be >= 0"),
                                           (["--cutmix", "1", "--loss", "square"], "probability targets")])
def test_train_mixup_bad_flags(tmp_path, extra, needle):
    with pytest.raises(UsageError, match=needle):
        train.main(train.parse_args([*TINY, "--out", str(tmp_path / "x"), *extra]))
