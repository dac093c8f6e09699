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
