"""scripts/pretrain_tiny_opt.py end to end on a tiny text file written here, with the 'test' preset."""
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from scripts import pretrain_tiny_opt as pretrain
from utils.checkpoint import load_checkpoint
from utils.cli import UsageError, run_cli
from utils.runio import read_jsonl

WORDS = "one two three four five six seven eight nine ten and or then".split()


def write_text(path, lines, seed):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            f.write(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + " .\n")
    return str(path)


def args_for(tmp_path, *extra):
    train = write_text(tmp_path / "train.txt", 200, 0)
    valid = write_text(tmp_path / "valid.txt", 40, 1)
    return pretrain.parse_args(["--train-file", train, "--validation-file", valid, "--out",
                                str(tmp_path / "out"), "--preset", "test", "--vocab-size", "200",
                                "--block-size", "32", "--max-positions", "64", "--bs", "4",
                                "--lr", "3e-3", "--warmup-steps", "2", *extra])


def test_pretrain_saves_loadable_model_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    first = pretrain.main(args_for(tmp_path, "--max-steps", "6", "--snapshot-steps", "3"))
    out = tmp_path / "out"
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.max_position_embeddings == 64 and model.config.vocab_size == len(tokenizer)
    assert tokenizer("one two")["input_ids"][0] == tokenizer.bos_token_id == model.config.bos_token_id
    saved = json.loads((out / "results.json").read_text())
    assert saved["step"] == 6 and saved["validation_perplexity"] == pytest.approx(first["validation_perplexity"])
    assert saved["tokens"] == 6 * 4 * 32 and saved["text_form"] == "raw"
    assert first["validation_perplexity"] == pytest.approx(math.exp(first["validation_ce"]))
    assert first["validation_perplexity"] < len(tokenizer)  # better than uniform after a few steps
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-000003", "step-000006"]
    assert load_checkpoint(str(out / "checkpoint.pt"), kind="pretrain_lm")["step"] == 6
    assert [r["step"] for r in read_jsonl(str(out / "metrics.jsonl"))] == []  # logged every 20 steps

    with pytest.raises(UsageError, match="--resume"):  # a finished run is never silently replaced
        pretrain.main(args_for(tmp_path, "--max-steps", "10"))
    second = pretrain.main(args_for(tmp_path, "--max-steps", "10", "--resume"))  # continues at step 6
    assert second["step"] == 10
    assert second["validation_perplexity"] < first["validation_perplexity"]
    with pytest.raises(UsageError, match="--lr"):  # resuming with another defining setting is refused
        pretrain.main(args_for(tmp_path, "--max-steps", "12", "--resume", "--lr", "1e-3"))


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    """A run killed after step 4 and resumed gives the same weights as one that ran 8 steps in one go."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir()
    split.mkdir()
    pretrain.main(args_for(whole, "--max-steps", "8"))
    real_step, calls = pretrain.train_step, []

    def crash_after_four(*a, **k):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*a, **k)

    monkeypatch.setattr(pretrain, "train_step", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(args_for(split, "--max-steps", "8", "--save-minutes", "0"))  # checkpoint every step
    monkeypatch.setattr(pretrain, "train_step", real_step)
    assert load_checkpoint(str(split / "out" / "checkpoint.pt"))["step"] == 4
    pretrain.main(args_for(split, "--max-steps", "8", "--resume"))
    a = load_checkpoint(str(whole / "out" / "checkpoint.pt"))["model"]
    b = load_checkpoint(str(split / "out" / "checkpoint.pt"))["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_rare_word_fill_replaces_every_unk_with_a_rare_word():
    rows = [" the cat <unk> sat \n", "", " the dog sat on a mat \n", " a zebra <unk> \n", " zebra yak yak yak \n"]
    filled = pretrain.rare_word_fill(rows, seed=0, count=3)
    assert all("<unk>" not in r for r in filled)
    assert filled[0].split()[2] == "yak" and filled[3].split()[2] == "yak"  # the only word seen 3 times
    assert filled[1:3] == rows[1:3] and filled == pretrain.rare_word_fill(rows, seed=0, count=3)


def test_raw_text_joins_rows_like_the_evaluation_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(" \n = Title = \n \n body \n")
    # rows "", " = Title = \n", "", " body \n" joined by blank lines, as quant.datautils joins the test rows
    assert pretrain.raw_text(str(path), seed=0) == "\n\n = Title = \n" + "\n\n" + "\n\n" + " body \n"


def test_perplexity_is_exp_mean_token_ce(tmp_path):
    args = args_for(tmp_path, "--max-steps", "1")
    pretrain.check_args(args)
    tokenizer = pretrain.train_tokenizer(open(args.train_file).readlines(), 200, 64)
    model = pretrain.build_model("test", tokenizer, 64, seed=0)
    blocks = torch.randint(0, len(tokenizer), (5, 16))
    ppl, ce = pretrain.perplexity(model, blocks, bs=2)
    with torch.no_grad():
        logits = model(input_ids=blocks).logits
    want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)).item()
    assert ce == pytest.approx(want, rel=1e-5) and ppl == pytest.approx(math.exp(want), rel=1e-5)


def test_time_budget_decays_lr_and_stops(tmp_path):
    args = args_for(tmp_path, "--max-steps", "100", "--max-minutes", "1")
    factor, progress = pretrain.lr_factor(50, 30.0, args)
    assert progress == pytest.approx(0.5) and factor == pytest.approx(0.5)
    factor, progress = pretrain.lr_factor(10, 60.0, args)
    assert progress == pytest.approx(1.0) and factor == 0.0


@pytest.mark.parametrize("extra, needle", [
    (["--train-file", "/no/such/train.txt"], "/no/such/train.txt"),
    (["--bs", "0"], "--bs"),
    (["--preset", "huge"], "--preset"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, needle):
    with pytest.raises(SystemExit) as exc:
        run_cli(pretrain.main, args_for(tmp_path, *extra))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
