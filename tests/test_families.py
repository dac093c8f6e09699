"""quant/families.py: the one causal-LM loader opt.py, llama.py, quant.qlinear and ft_quant.py use."""
from types import SimpleNamespace

import pytest
import torch

from quant.families import FAMILIES, family_of, load_causal_lm
from tests.quant_tiny import make_model, make_tokenizer
from utils.cli import UsageError


def test_loads_float32_eval_without_cache(tmp_path):
    tokenizer = make_tokenizer()
    model = make_model("opt", len(tokenizer.get_vocab())).to(torch.float16)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_causal_lm(str(tmp_path))
    assert not loaded.training and loaded.config.use_cache is False
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert tok("one two").input_ids == tokenizer("one two").input_ids


@pytest.mark.parametrize("make", [lambda p: p, lambda p: p.mkdir() or p, lambda p: p.write_text("x") or p])
def test_unloadable_path_is_one_usage_error_line(tmp_path, make):
    path = str(make(tmp_path / "m"))
    with pytest.raises(UsageError) as err:
        load_causal_lm(path)
    message = str(err.value)
    assert message.startswith(f"cannot load model {path!r}: ") and "\n" not in message


def test_family_of_maps_model_types_and_names_the_unsupported_one():
    model = SimpleNamespace(config=SimpleNamespace(model_type="mistral"))
    assert family_of(model) is FAMILIES["llama"] and family_of(model, "opt") is FAMILIES["opt"]
    with pytest.raises(UsageError, match=r"^model type 'gpt2' is not supported; use --family$"):
        family_of(SimpleNamespace(config=SimpleNamespace(model_type="gpt2")), hint="; use --family")
