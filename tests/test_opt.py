"""End to end: opt.py / llama.py on tiny OPT and Llama models built and briefly trained in the test."""
import json
import os
import tempfile

import pytest
import torch

import llama  # noqa: F401  (the entry point imports)
import opt
from quant import driver, saveload
from quant.families import FAMILIES
from tests.quant_tiny import build, make_model, make_tokenizer, write_data
from utils.cli import run_cli

AUTHORS = ["--wbits", "2", "--quant", "ldlqRG", "--incoh_processing"]
FAST = ["--nsamples", "16", "--eval", "wikitext2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    data, model = build(str(tmp_path_factory.mktemp("tiny_opt")), steps=300)
    return data, model


def run(model, data, *flags):
    out = [] if "--out" in flags or "--output-dir" in flags else ["--out", os.path.join(tempfile.mkdtemp(), "run")]
    return opt.main(opt.parse_args([model, "wikitext2", *flags, "--data-dir", data, *out]))


def test_more_bits_lower_perplexity(tiny):
    data, model = tiny
    ppl = {b: run(model, data, *FAST, "--wbits", str(b), "--quant", "ldlqRG",
                  "--incoh_processing")["ppl_wikitext2"] for b in (16, 4, 2)}
    assert ppl[16] <= ppl[4] <= ppl[2], ppl
    assert ppl[2] > ppl[16]


def test_authors_command_save_then_load(tiny, tmp_path):
    data, model = tiny
    saved = str(tmp_path / "q2")
    first = run(model, data, *AUTHORS, "--save", saved, "--nsamples", "16", "--output-dir", str(tmp_path))
    again = run(model, data, "--load", saved)
    for name in ("wikitext2", "ptb", "c4"):
        assert first[f"ppl_{name}"] == pytest.approx(again[f"ppl_{name}"], rel=1e-6)
    results = json.load(open(tmp_path / "results.json"))
    assert results["ppl_c4"] == first["ppl_c4"] and os.path.exists(tmp_path / "config.json")
    cfg, records = saveload.read_codes(saved)
    assert len(records) == 12 and cfg.wbits == 2 and cfg.proj == "butterfly" and cfg.qfn == "b"
    for rec in records.values():
        assert rec.codes.dtype == torch.uint8 and rec.codes.max() <= 3


def test_codes_rebuild_the_saved_weights(tiny, tmp_path):
    data, model = tiny
    saved = str(tmp_path / "q3")
    run(model, data, "--wbits", "3", "--quant", "gptq", "--groupsize", "16", "--save", saved,
        "--proxy_only", "--nsamples", "8")
    dense, _ = opt.load_model(saved)
    cfg, records = saveload.read_codes(saved)
    layers = FAMILIES["opt"].base(dense).layers
    for name, rec in records.items():
        _, i, sub = name.split(".", 2)
        W = layers[int(i)].get_submodule(sub).weight
        assert torch.allclose(driver.dequantize(rec, cfg, tuple(W.shape)).float(), W, atol=1e-6)


def test_same_seed_same_perplexity(tiny):
    data, model = tiny
    a = run(model, data, *FAST, "--wbits", "3", "--quant", "ldlqRG", "--incoh_processing", "--seed", "3")
    b = run(model, data, *FAST, "--wbits", "3", "--quant", "ldlqRG", "--incoh_processing", "--seed", "3")
    assert a == {**b, "quant_seconds": a["quant_seconds"]}


@pytest.mark.parametrize("flags", [
    ["--quant", "nearest"], ["--quant", "gptq", "--pre_gptqH"], ["--quant", "ldlq", "--npasses", "1"],
    ["--quant", "allbal", "--npasses", "2"], ["--quant", "ldlqRG", "--incoh_processing", "--incoh", "kron"],
    ["--quant", "ldlqRG", "--incoh_processing", "--incoh", "hadamard", "--npasses", "1"],
    ["--quant", "gptq", "--pre_rescale", "--pre_proj", "--qfn", "b"],
])
def test_every_method_runs(tiny, flags):
    data, model = tiny
    out = run(model, data, "--wbits", "4", "--nsamples", "8", "--proxy_only", *flags)
    assert out["proxy_loss"] > 0 and "ppl_wikitext2" not in out


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_layerwise_perplexity_matches_full_forward(family):
    tok = make_tokenizer()
    model = make_model(family, len(tok)).eval()
    ids = torch.randint(4, len(tok), (1, 3 * 16 + 5), generator=torch.Generator().manual_seed(0))
    ppl = driver.perplexity(model, FAMILIES[family], ids, 16, "cpu", batch=2)
    windows = ids[:, :48].view(3, 16)
    with torch.no_grad():
        loss = model(input_ids=windows, labels=windows).loss
    assert ppl == pytest.approx(torch.exp(loss).item(), rel=1e-5)


def test_tiny_llama_through_the_same_code(tmp_path):
    data = write_data(str(tmp_path / "data"))
    tok = make_tokenizer()
    path = str(tmp_path / "llama")
    make_model("llama", len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    base = run(path, data, *FAST, "--wbits", "16")
    quant = run(path, data, *FAST, "--wbits", "4", "--quant", "ldlqRG", "--incoh_processing")
    assert torch.isfinite(torch.tensor(quant["ppl_wikitext2"])) and quant["proxy_loss"] > 0
    args = opt.parse_args([path, "wikitext2", "--wbits", "16", *FAST, "--data-dir", data,
                           "--out", str(tmp_path / "run")], family="llama")
    assert opt.main(args)["ppl_wikitext2"] == base["ppl_wikitext2"]


@pytest.mark.parametrize("flags, message", [
    (["--wbits", "5"], "--wbits"),
    (["--quant", "bogus"], "--quant"),
    (["--eval", "wikitext9"], "wikitext9"),
    (["--qfn", "b"], "--pre_proj"),
    (["--incoh_processing", "--groupsize", "8"], "--groupsize"),
    (["--load", "/nonexistent/dir"], "--load"),
    (["--save", "/tmp/x"], "--save"),
])
def test_bad_input_exits_2_with_one_line(tiny, capsys, flags, message):
    data, model = tiny
    with pytest.raises(SystemExit) as exc:
        run_cli(opt.main, opt.parse_args([model, "wikitext2", *flags, "--data-dir", data]))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize("missing", ["wikitext-2/train.txt", "ptb/ptb.test.txt", "c4/c4_validation_2k.jsonl"])
def test_missing_data_exits_2_with_one_line(tiny, tmp_path, capsys, monkeypatch, missing):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, model = tiny
    data = write_data(str(tmp_path / "d"))
    os.remove(os.path.join(data, missing))
    with pytest.raises(SystemExit) as exc:
        run_cli(opt.main, opt.parse_args([model, "wikitext2", "--wbits", "2", "--data-dir", data]))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "layout" in err


def test_missing_model_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(opt.main, opt.parse_args([str(tmp_path / "nope"), "wikitext2", "--eval", ""]))
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_max_eval_windows_subsamples(tiny):
    data, model = tiny
    full = run(model, data, "--wbits", "16", "--eval", "ptb")["ppl_ptb"]
    part = run(model, data, "--wbits", "16", "--eval", "ptb", "--max-eval-windows", "3")["ppl_ptb"]
    assert part != full and abs(part / full - 1) < 0.5


def test_writes_a_run_directory_by_default_and_refuses_to_replace_it(tiny, tmp_path, monkeypatch, capsys):
    data, model = tiny
    monkeypatch.chdir(tmp_path)
    argv = [model, "wikitext2", "--wbits", "16", *FAST, "--data-dir", data]
    results = opt.main(opt.parse_args(argv))
    (out,) = [os.path.join("runs", "opt", d) for d in os.listdir(os.path.join("runs", "opt"))]
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f) == results
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["wbits"] == 16 and config["git_commit"] and "argv" in config
    with pytest.raises(SystemExit) as exc:
        run_cli(opt.main, opt.parse_args(argv))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "--overwrite" in err and len(err.splitlines()) == 1
    assert opt.main(opt.parse_args([*argv, "--overwrite"]))["ppl_wikitext2"] == results["ppl_wikitext2"]
    assert any(d.startswith(os.path.basename(out) + ".old-") for d in os.listdir(os.path.join("runs", "opt")))


def test_save_refuses_the_models_own_and_a_non_empty_directory(tiny, tmp_path, capsys):
    data, model = tiny
    before = sorted(os.listdir(model))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    for target, needle in ((model, "model being read"), (str(full), "not empty")):
        with pytest.raises(SystemExit) as exc:
            run_cli(opt.main, opt.parse_args([model, "wikitext2", "--wbits", "4", "--save", target, *FAST,
                                              "--data-dir", data, "--out", str(tmp_path / "r")]))
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1
    assert sorted(os.listdir(model)) == before and (full / "keep.txt").read_text() == "mine"
    run(model, data, "--wbits", "4", "--save", str(full), "--nsamples", "16", "--eval", "", "--overwrite")
    assert os.path.exists(full / saveload.CODES_FILE) and not (full / "keep.txt").exists()
    aside = [p for p in os.listdir(tmp_path) if p.startswith("full.old-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "keep.txt").read_text() == "mine"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_save_is_atomic(tiny, tmp_path, monkeypatch):
    """A crash while writing the model leaves no half-written --save directory behind."""
    data, model = tiny
    target = tmp_path / "q"

    def crash(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(saveload, "atomic_torch_save", crash)
    with pytest.raises(SystemExit):
        run_cli(opt.main, opt.parse_args([model, "wikitext2", "--wbits", "4", "--save", str(target), *FAST,
                                          "--nsamples", "16", "--data-dir", data, "--out", str(tmp_path / "r")]))
    assert not target.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
