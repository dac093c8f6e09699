"""ft_quant.py: LoRA on a frozen opt.py --save model, on tiny OPT / Llama models built in the test."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

import ft_opt
import ft_quant
import losses
import opt
from quant import qlinear
from tests.quant_tiny import build
from utils.cli import run_cli

BLOCK = 16


@pytest.fixture(scope="module", params=["opt", "llama"])
def tiny(request, tmp_path_factory):
    """(family, data dir, dense model dir, 2-bit ldlqRG + incoherence --save dir)."""
    root = tmp_path_factory.mktemp(f"ftq_{request.param}")
    data, model = build(str(root), request.param, steps=40)
    saved = str(root / "q2")
    opt.main(opt.parse_args([model, "wikitext2", "--wbits", "2", "--quant", "ldlqRG", "--incoh_processing",
                             "--save", saved, "--nsamples", "8", "--eval", "", "--data-dir", data]))
    return request.param, data, model, saved


def argv(tiny, out, *extra):
    _, data, _, saved = tiny
    train, test = (os.path.join(data, "wikitext-2", f"{split}.txt") for split in ("train", "test"))
    # "validation" is the head of the training text: with --max-train-blocks 12 it is exactly what the
    # fine-tune trains on, which it must at least fit
    return ["--base", saved, "--train-file", train, "--validation-file", train, "--test-file", test, "--eval-test", "--block-size", str(BLOCK),
            "--bs", "4", "--max-eval-blocks", "12", "--logging-steps", "1", "--out", str(out), *extra]


def test_training_moves_only_lora_and_keeps_codes_bit_identical(tiny, tmp_path):
    args = ft_quant.parse_args(argv(tiny, tmp_path / "run", "--max-steps", "4", "--lr", "1e-2"))
    form, ns = ft_quant.check_args(args)
    model, tokenizer, bits, _, targets = ft_quant.base_model(args)
    before = qlinear.frozen_state(model)
    model = ft_quant.with_adapters(args, model, targets)
    data = ft_opt.load_data(ns, tokenizer)
    trainer = ft_opt.make_trainer(ns, model, tokenizer, data, form)
    batch = ft_opt.collate([data["train"][i] for i in range(4)])
    ft_opt.batch_loss(model, trainer.capture, batch, form).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in n for n in with_grad)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == with_grad
    model.zero_grad()
    trainer.train()
    after = qlinear.frozen_state(model)
    assert len(before) == len(after) > 0 and bits == 2  # names gain peft's prefixes; the order stays
    assert all(torch.equal(a, b) for a, b in zip(before.values(), after.values()))
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_gradient_checkpointing_gives_the_same_lora_gradients(tiny, tmp_path):
    """Recomputing the quantized decoder layers in backward (codes dequantized again) changes no gradient."""
    grads = []
    for flags in ([], ["--gradient-checkpointing"]):
        args = ft_quant.parse_args(argv(tiny, tmp_path / f"gc{len(flags)}", "--max-steps", "1", *flags))
        form, ns = ft_quant.check_args(args)
        model, tokenizer, _, _, targets = ft_quant.base_model(args)
        model = ft_quant.with_adapters(args, model, targets)
        data = ft_opt.load_data(ns, tokenizer)
        trainer = ft_opt.make_trainer(ns, model, tokenizer, data, form)
        assert model.is_gradient_checkpointing == bool(flags)
        batch = ft_opt.collate([data["train"][i] for i in range(4)])
        torch.manual_seed(0)  # the same LoRA dropout masks in both runs
        loss = trainer.training_step(model, batch, (batch["shift_labels"] != -100).sum())
        grads.append((loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss, plain), (loss_gc, checkpointed) = grads
    torch.testing.assert_close(loss_gc, loss, rtol=1e-5, atol=1e-6)
    assert plain.keys() == checkpointed.keys() and any(g.abs().sum() > 0 for g in plain.values())
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-6)


def reference_perplexity(tiny, adapters):
    """exp(mean CE) over the test blocks, from the dense fake-quantized copy opt.py saved plus peft's stock
    LoRA Linear loaded from the adapter files: none of ft_quant's or qlinear's code."""
    from peft import PeftModel
    _, data, _, saved = tiny
    dense, tokenizer = opt.load_model(saved)
    model = PeftModel.from_pretrained(dense, adapters).eval()
    with open(os.path.join(data, "wikitext-2", "test.txt"), encoding="utf-8") as f:
        ids = [t for line in f for t in tokenizer(line)["input_ids"]]
    blocks = torch.tensor(ids[:len(ids) // BLOCK * BLOCK]).reshape(-1, BLOCK)[:12]
    with torch.no_grad():
        logits = model(input_ids=blocks).logits
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1))
    return math.exp(ce.item())


def test_root_fine_tune_perplexity_save_reload_merge(tiny, tmp_path):
    base = ft_quant.main(ft_quant.parse_args(argv(tiny, tmp_path / "nolora", "--eval-only")))
    run = tmp_path / "root"
    trained = ft_quant.main(ft_quant.parse_args(argv(tiny, run, "--loss", "root", "--k", "5", "--m", "5",
                                                     "--max-steps", "12", "--lr", "3e-3", "--eval-merged",
                                                     "--max-train-blocks", "12")))
    assert trained["train_steps"] == 12 and trained["lora"] and not base["lora"]
    assert trained["validation_perplexity"] < base["validation_perplexity"]
    assert trained["test_perplexity"] != base["test_perplexity"]
    assert trained["test_perplexity"] == pytest.approx(reference_perplexity(tiny, run / "adapters"), rel=1e-4)
    assert trained["merged_test_perplexity"] == pytest.approx(trained["test_perplexity"], rel=1e-4)
    assert trained["test_perplexity"] != pytest.approx(math.exp(trained["test_objective_root"]))
    assert json.loads((run / "results.json").read_text())["test_perplexity"] == trained["test_perplexity"]
    assert not any(name.startswith("model") for name in os.listdir(run / "adapters"))  # adapters only
    again = ft_quant.main(ft_quant.parse_args(argv(tiny, tmp_path / "reload", "--eval-only",
                                                   "--adapters", str(run / "adapters"))))
    assert again["test_perplexity"] == pytest.approx(trained["test_perplexity"], rel=1e-6)
    resumed = ft_quant.main(ft_quant.parse_args(argv(tiny, run, "--loss", "root", "--k", "5", "--m", "5",
                                                     "--max-steps", "12", "--lr", "3e-3", "--eval-merged",
                                                     "--max-train-blocks", "12", "--resume")))
    assert resumed == json.loads((run / "results.json").read_text())


def test_eval_perplexity_is_exp_mean_token_ce(tiny, tmp_path):
    """The no-LoRA evaluation against CE computed here from the dense fake-quantized copy."""
    _, data, _, saved = tiny
    found = ft_quant.main(ft_quant.parse_args(argv(tiny, tmp_path / "e", "--eval-only", "--loss", "ce")))
    dense, tokenizer = opt.load_model(saved)
    with open(os.path.join(data, "wikitext-2", "test.txt"), encoding="utf-8") as f:
        ids = [t for line in f for t in tokenizer(line)["input_ids"]]
    blocks = torch.tensor(ids[:len(ids) // BLOCK * BLOCK]).reshape(-1, BLOCK)[:12]
    with torch.no_grad():
        lp = dense(input_ids=blocks).logits[:, :-1].log_softmax(-1)
    ce = -lp.gather(-1, blocks[:, 1:, None]).mean().item()
    assert found["test_tokens"] == blocks[:, 1:].numel()
    assert found["test_perplexity"] == pytest.approx(math.exp(ce), rel=1e-4)
    assert found["test_objective_ce"] == pytest.approx(ce, rel=1e-4)
    assert losses.get_form("ce") is not None


@pytest.mark.parametrize("extra, needle", [
    (["--loss", "nope"], "--loss"),
    (["--lora-r", "0"], "--lora-r"),
    (["--adapters", "/no/such/dir"], "adapter_config.json"),
])
def test_bad_input_exits_2_with_one_line(tiny, tmp_path, capsys, extra, needle):
    with pytest.raises(SystemExit) as exc:
        run_cli(ft_quant.main, ft_quant.parse_args(argv(tiny, tmp_path / "bad", *extra)))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


def test_directory_that_is_not_a_save_output_exits_2(tiny, tmp_path, capsys):
    _, _, model, _ = tiny
    for base in (model, str(tmp_path / "missing")):
        args = argv(tiny, tmp_path / "bad")
        args[1] = base
        with pytest.raises(SystemExit) as exc:
            run_cli(ft_quant.main, ft_quant.parse_args(args))
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and base in err[0]
    assert not os.path.exists(tmp_path / "bad")


def test_finished_run_is_refused_without_resume(tiny, tmp_path, capsys):
    ft_quant.main(ft_quant.parse_args(argv(tiny, tmp_path / "r", "--eval-only")))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(ft_quant.main, ft_quant.parse_args(argv(tiny, tmp_path / "r", "--eval-only")))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(err) == 1 and "--resume" in err[0]  # after the tokenizer's progress bars
