"""Calibration and evaluation text (quant/datautils.py)."""
import os

import pytest
import torch

from quant import datautils as D
from tests.quant_tiny import make_tokenizer, write_data
from utils.cli import UsageError

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(str(tmp_path_factory.mktemp("qdata")))


def test_wikitext2_rows_put_blanks_back(data):
    rows = D.wikitext2_test_rows(data)
    with open(os.path.join(data, "wikitext-2/test.txt")) as f:
        tok = f.readlines()
    assert len(rows) == len(tok)
    assert all((r == "") == (not t.strip()) for r, t in zip(rows, tok))
    assert D.eval_text("wikitext2", data) == "\n\n".join(rows)


def test_misaligned_raw_file_is_a_usage_error(tmp_path):
    root = write_data(str(tmp_path))
    with open(os.path.join(root, "wikitext-2-raw/wiki.test.raw"), "a") as f:
        f.write(" extra line \n")
    with pytest.raises(UsageError):
        D.wikitext2_test_rows(root)


def test_ptb_and_c4_joins(data):
    assert "\n" not in D.eval_text("ptb", data)
    docs = D.c4_docs(data)
    assert D.eval_text("c4", data) == " ".join(docs[:D.C4_EVAL_DOCS])


@pytest.mark.parametrize("name", D.EVAL_SETS)
def test_calibration_windows_seeded(data, name):
    tok = make_tokenizer()
    text = D.calibration_text(name, data)
    a = D.calibration_windows(text, tok, 5, 16, 0)
    b = D.calibration_windows(text, tok, 5, 16, 0)
    c = D.calibration_windows(text, tok, 5, 16, 1)
    assert len(a) == 5 and all(w.shape == (1, 16) for w in a)
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))


def test_eval_ids_cut_c4(data):
    ids = D.eval_ids("c4", D.eval_text("c4", data), make_tokenizer(), 4)
    assert ids.shape == (1, 256 * 4)


@pytest.mark.parametrize("name", D.EVAL_SETS)
def test_missing_data_names_the_layout(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="expected the layout"):
        D.eval_text(name, str(tmp_path))


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "wikitext-2-raw/wiki.test.raw")),
                    reason="shared WikiText-2 files not present")
def test_real_wikitext2_rebuilds_hf_rows():
    rows = D.wikitext2_test_rows(SHARED)
    assert len(rows) == 4358 and rows[0] == "" and rows[1] == " = Robert Boulter = \n"


def test_token_cache_reuses_ids(data, tmp_path):
    tok = make_tokenizer()
    text = D.eval_text("ptb", data)
    a = D.tokenize(text, tok, str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1
    assert torch.equal(D.tokenize(text, tok, str(tmp_path)), a)
    assert torch.equal(D.tokenize(text, tok), a)


def write_ptb_validation(root):
    with open(os.path.join(root, "ptb/ptb.valid.txt"), "w") as f:
        f.writelines([" one two three \n", " four five six \n"])


def test_old_ptb_is_the_validation_split_joined_by_blank_lines(tmp_path):
    root = write_data(str(tmp_path))
    write_ptb_validation(root)
    assert D.eval_text("ptb", root, "old") == "one two three\n\nfour five six"
    assert D.eval_text("ptb", root, "new") == " ".join(D.ptb_rows(root, "test"))
    assert D.eval_text("wikitext2", root, "old") == D.eval_text("wikitext2", root, "new")


def test_old_c4_is_256_seeded_random_windows(data):
    tok, seqlen = make_tokenizer(), 8
    docs = D.eval_text("c4", data, "old")
    a = D.eval_ids("c4", docs, tok, seqlen, variant="old")
    assert a.shape == (1, 256 * seqlen)
    assert torch.equal(a, D.eval_ids("c4", docs, tok, seqlen, variant="old"))  # seed 0, always
    new = D.eval_ids("c4", D.eval_text("c4", data, "new"), tok, seqlen)
    assert new.shape == a.shape and not torch.equal(new, a)
    # every window is a contiguous piece of one document
    doc_ids = [tok(d, return_tensors="pt").input_ids[0].tolist() for d in docs]
    for w in a.view(256, seqlen).tolist()[:20]:
        assert any(any(ids[i:i + seqlen] == w for i in range(len(ids) - seqlen + 1)) for ids in doc_ids)


def test_unknown_variant_is_a_usage_error(data):
    with pytest.raises(UsageError, match="variant"):
        D.eval_text("ptb", data, "older")


def test_eval_variant_defaults_follow_the_authors_entry_scripts():
    import opt
    assert opt.parse_args(["m", "wikitext2"]).eval_variant == "new"
    assert opt.parse_args(["m", "wikitext2"], family="llama").eval_variant == "old"
    assert opt.parse_args(["m", "wikitext2", "--eval-variant", "old"]).eval_variant == "old"
