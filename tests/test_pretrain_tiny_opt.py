"""scripts/pretrain_tiny_opt.py end to end on a tiny text file written here, with the 'test' preset."""
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from scripts import pretrain_tiny_opt as pretrain
from utils.cli import run_cli

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
    return pretrain.parse_args(["--train-file", train, "--validation-file", valid, "--output-dir",
                                str(tmp_path / "out"), "--preset", "test", "--vocab-size", "200",
                                "--block-size", "32", "--max-positions", "64", "--bs", "4",
                                "--lr", "3e-3", "--warmup-steps", "2", *extra])


def test_pretrain_saves_loadable_model_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    first = pretrain.main(args_for(tmp_path, "--max-steps", "6"))
    out = tmp_path / "out"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.max_position_embeddings == 64 and model.config.vocab_size == len(tokenizer)
    assert tokenizer("one two")["input_ids"][0] == tokenizer.bos_token_id == model.config.bos_token_id
    saved = json.loads((out / "run" / "results.json").read_text())
    assert saved["step"] == 6 and saved["validation_perplexity"] == pytest.approx(first["validation_perplexity"])
    assert first["validation_perplexity"] == pytest.approx(math.exp(first["validation_ce"]))
    assert first["validation_perplexity"] < len(tokenizer)  # better than uniform after a few steps

    second = pretrain.main(args_for(tmp_path, "--max-steps", "10"))  # resumes at step 6
    assert second["step"] == 10
    assert second["validation_perplexity"] < first["validation_perplexity"]


def test_perplexity_is_exp_mean_token_ce(tmp_path):
    args = args_for(tmp_path, "--max-steps", "1")
    pretrain.check_args(args)
    tokenizer = pretrain.train_tokenizer(args.train_file, 200, 64)
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
