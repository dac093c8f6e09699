"""ft_opt.py on a tiny OPT built from a config, with a tokenizer trained here on text written here."""
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

import ft_opt
import losses
from scripts.pretrain_tiny_opt import build_model, train_tokenizer
from utils.cli import run_cli

WORDS = ("the cat dog bird sees eats likes a small big red green house tree river runs walks "
         "quickly slowly and but then over under near").split()
BLOCK = 32


def write_text(path, lines, seed):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            n = rng.randint(4, 12)
            f.write(" " + " ".join(rng.choice(WORDS) for _ in range(n)) + " .\n")
    return str(path)


def test_training_args_take_each_scripts_defaults_and_help():
    from utils.cli import ArgumentParser
    p = ArgumentParser()
    ft_opt.add_training_args(p, lr=1e-3, warmup_steps=0, helps={"seed": "adapter seed"})
    args = p.parse_args([])
    assert (args.lr, args.warmup_steps, args.weight_decay, args.k, args.loss) == (1e-3, 0, 0.01, 5.0, "root")
    assert args.gradient_checkpointing is False and p.parse_args(["--gradient-checkpointing"]).gradient_checkpointing
    assert "adapter seed" in p.format_help() and "training objective" in p.format_help()
    assert ft_opt.parse_args([]).lr == 1e-5 and ft_opt.parse_args([]).warmup_steps == 500
    with pytest.raises(ValueError, match="warmup"):
        ft_opt.add_training_args(ArgumentParser(), warmup=0)  # a misspelt flag is not silently ignored


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny OPT + tokenizer and train / validation text files."""
    root = tmp_path_factory.mktemp("ftopt")
    train = write_text(root / "train.txt", 300, 0)
    valid = write_text(root / "valid.txt", 60, 1)
    tokenizer = train_tokenizer(train, vocab_size=300, max_positions=64)
    torch.manual_seed(0)
    model = build_model("test", tokenizer, max_positions=64, seed=0)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return {"root": root, "train": train, "valid": valid, "model": str(model_dir),
            "tokenizer": tokenizer}


def base_args(tiny, out, *extra):
    return ft_opt.parse_args(["--model", tiny["model"], "--train-file", tiny["train"],
                              "--validation-file", tiny["valid"], "--output-dir", str(out),
                              "--block-size", str(BLOCK), "--bs", "4", "--warmup-steps", "0",
                              "--logging-steps", "1", *extra])


def load(tiny):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(tiny["model"], dtype=torch.float32)


def make_batch(tiny, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, len(tiny["tokenizer"]), (n, BLOCK), generator=g)
    return ft_opt.collate([{"input_ids": row.tolist(), "labels": row.tolist()} for row in ids])


@pytest.mark.parametrize("loss", ft_opt.LM_LOSSES)
def test_few_steps_lower_training_loss(tiny, loss):
    model = load(tiny)
    capture = ft_opt.HiddenStates(model)
    form = losses.get_form(loss, k=5, m=5)
    batch = make_batch(tiny)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    values = []
    for _ in range(6):
        value = ft_opt.batch_loss(model, capture, batch, form, "mean")
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < values[0]


@pytest.mark.parametrize("loss", ["root", "ce", "focal"])
def test_chunked_matches_plain_logits(tiny, loss):
    model = load(tiny)
    capture = ft_opt.HiddenStates(model)
    form = losses.get_form(loss, k=5, m=5)
    batch = make_batch(tiny)
    batch["shift_labels"][0, :5] = -100
    results = []
    for head, chunk in (("plain", None), ("chunked", 7)):
        model.zero_grad()
        value = ft_opt.batch_loss(model, capture, batch, form, "mean", head=head, chunk_size=chunk)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in model.parameters()]))
    (v0, g0), (v1, g1) = results
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_ignored_labels_do_not_count(tiny):
    model = load(tiny)
    capture = ft_opt.HiddenStates(model)
    batch = make_batch(tiny)
    assert (batch["shift_labels"][:, -1] == -100).all()
    assert torch.equal(batch["shift_labels"][:, :-1], batch["input_ids"][:, 1:])
    batch["shift_labels"][:, :10] = -100
    value = ft_opt.batch_loss(model, capture, batch, losses.ce_form(), "mean")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits[:, 10:-1]
    want = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["input_ids"][:, 11:].reshape(-1))
    torch.testing.assert_close(value.detach(), want, rtol=1e-5, atol=1e-6)


def test_grad_accumulation_matches_one_big_batch(tiny, tmp_path):
    """2 micro-batches of 2 under Trainer's token-count scaling give the gradient of one batch of 4."""
    batch = make_batch(tiny)
    batch["shift_labels"][0, :20] = -100  # unequal token counts: a mean of means would differ
    grads = []
    for accum in (1, 2):
        args = base_args(tiny, tmp_path / f"ga{accum}", "--grad-accum", str(accum), "--max-steps", "1")
        model = load(tiny)
        form = ft_opt.check_args(args)
        trainer = ft_opt.make_trainer(args, model, tiny["tokenizer"], {"validation": []}, form)
        parts = [{k: v[i::accum] for k, v in batch.items()} for i in range(accum)]
        if hasattr(trainer, "_get_num_items_in_batch"):  # Trainer's own count over shift_labels
            assert int(trainer._get_num_items_in_batch(parts, "cpu")) == int((batch["shift_labels"] != -100).sum())
        count = (batch["shift_labels"] != -100).sum()
        model.zero_grad()
        total = sum(trainer.training_step(model, part, count) for part in parts)
        grads.append((total, [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients(tiny, tmp_path):
    batch = make_batch(tiny)
    count = (batch["shift_labels"] != -100).sum()
    grads = []
    for flags in ([], ["--gradient-checkpointing"]):
        args = base_args(tiny, tmp_path / f"gc{len(flags)}", "--max-steps", "1", *flags)
        model = load(tiny)
        trainer = ft_opt.make_trainer(args, model, tiny["tokenizer"], {"validation": []}, ft_opt.check_args(args))
        assert model.is_gradient_checkpointing == bool(flags)
        model.zero_grad()
        loss = trainer.training_step(model, dict(batch), count)
        grads.append((loss, [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def reference_perplexity(tiny, path, block):
    """exp(mean next-token CE) over blocks of the concatenated per-line tokens, computed directly."""
    tokenizer, model = tiny["tokenizer"], load(tiny)
    with open(path, encoding="utf-8") as f:
        ids = [tok for line in f.readlines() for tok in tokenizer(line)["input_ids"]]
    blocks = torch.tensor(ids[:len(ids) // block * block]).reshape(-1, block)
    with torch.no_grad():
        logits = model(input_ids=blocks).logits
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1))
    return math.exp(ce.item()), blocks[:, 1:].numel()


def test_eval_only_reports_true_perplexity(tiny, tmp_path):
    args = base_args(tiny, tmp_path / "eval", "--eval-only", "--loss", "root", "--eval-bs", "3")
    results = ft_opt.main(args)
    want, tokens = reference_perplexity(tiny, tiny["valid"], BLOCK)
    assert results["validation_tokens"] == tokens
    assert results["validation_perplexity"] == pytest.approx(want, rel=1e-5)
    assert results["validation_perplexity"] != pytest.approx(math.exp(results["validation_objective_root"]))
    saved = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert saved["validation_perplexity"] == pytest.approx(want, rel=1e-5)


def test_train_save_resume_end_to_end(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = tmp_path / "ft"
    before = ft_opt.main(base_args(tiny, tmp_path / "before", "--eval-only"))
    args = base_args(tiny, out, "--loss", "root", "--k", "5", "--m", "5", "--lr", "3e-3",
                     "--max-steps", "12", "--save-steps", "6", "--eval-test", "--test-file", tiny["valid"])
    results = ft_opt.main(args)
    assert results["train_steps"] == 12
    assert results["validation_perplexity"] < before["validation_perplexity"]
    assert results["test_perplexity"] == pytest.approx(results["validation_perplexity"])
    assert "train_objective_root_mean" in results
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("train_objective_root" in line for line in history)
    assert not any("loss" in line for line in history)
    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    resumed = ft_opt.main(base_args(tiny, out, "--loss", "root", "--lr", "3e-3", "--max-steps", "14",
                                    "--save-steps", "6", "--resume"))
    assert resumed["train_steps"] == 14


@pytest.mark.parametrize("extra, needle", [
    (["--loss", "nope"], "--loss"),
    (["--k", "0"], "k"),
    (["--m", "-1"], "m"),
    (["--train-file", "/no/such/file.txt"], "/no/such/file.txt"),
    (["--resume"], "checkpoint"),
])
def test_bad_input_exits_2_with_one_line(tiny, tmp_path, capsys, extra, needle):
    with pytest.raises(SystemExit) as exc:
        run_cli(ft_opt.main, base_args(tiny, tmp_path / "bad", "--max-steps", "1", *extra))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


def test_missing_model_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(ft_opt.main, ft_opt.parse_args(["--model", str(tmp_path / "none"), "--output-dir",
                                                str(tmp_path / "o")]))
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_dataset_layouts_and_also_eval(tiny, tmp_path, capsys):
    """--dataset wikitext2 / --also-eval c4 read the ../shared/data layouts (.txt and .jsonl)."""
    data = tmp_path / "data"
    (data / "wikitext-2").mkdir(parents=True)
    (data / "c4").mkdir()
    for split, seed in (("train", 0), ("valid", 1), ("test", 2)):
        write_text(data / "wikitext-2" / f"{split}.txt", 40, seed)
    lines = open(write_text(tmp_path / "c4.txt", 40, 3)).read().splitlines()
    (data / "c4" / "c4_validation_2k.jsonl").write_text(
        "".join(json.dumps({"text": line, "url": "u"}) + "\n" for line in lines))
    argv = ["--model", tiny["model"], "--dataset", "wikitext2", "--data-dir", str(data), "--eval-only",
            "--eval-test", "--block-size", str(BLOCK), "--output-dir", str(tmp_path / "o")]
    results = ft_opt.main(ft_opt.parse_args(argv + ["--also-eval", "c4"]))
    assert {"validation_perplexity", "test_perplexity", "c4_validation_perplexity"} <= set(results)
    assert results["c4_validation_tokens"] > 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # PTB is not in this data dir, and the hub is offline
        run_cli(ft_opt.main, ft_opt.parse_args(argv + ["--also-eval", "ptb"]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ptb" in err[0]


def test_existing_run_is_refused_and_resume_checks_the_loss(tiny, tmp_path, capsys):
    out = tmp_path / "ft"
    first = ft_opt.main(base_args(tiny, out, "--loss", "root", "--max-steps", "2", "--save-steps", "2"))
    model_file = sorted(p.name for p in out.iterdir() if p.name.startswith("model"))
    before = {name: (out / name).read_bytes() for name in model_file}
    capsys.readouterr()
    for extra, needle in ((["--loss", "ce"], "--overwrite"), (["--loss", "ce", "--resume"], "--loss 'root'")):
        with pytest.raises(SystemExit) as exc:
            run_cli(ft_opt.main, base_args(tiny, out, "--max-steps", "3", "--save-steps", "2", *extra))
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and needle in err[0]
    assert {name: (out / name).read_bytes() for name in model_file} == before  # the RLO model is untouched
    assert json.loads((out / "run" / "results.json").read_text())["validation_perplexity"] == \
        pytest.approx(first["validation_perplexity"])
    ft_opt.main(base_args(tiny, out, "--loss", "ce", "--max-steps", "2", "--overwrite"))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("ft.old-")]
    assert len(aside) == 1 and json.loads((aside[0] / "run" / "config.json").read_text())["loss"] == "root"
    assert json.loads((out / "run" / "config.json").read_text())["loss"] == "ce"


def test_default_output_dir_names_the_loss(tiny):
    root = ft_opt.parse_args(["--model", tiny["model"], "--loss", "root"])
    ce = ft_opt.parse_args(["--model", tiny["model"], "--loss", "ce"])
    assert "_root_k5_m5_" in ft_opt.default_out(root) and "_ce_" in ft_opt.default_out(ce)
    assert ft_opt.default_out(root) != ft_opt.default_out(ce)
