"""utils/lm_data.py: the corpus registry, local files first, the hub only as a fallback."""
import os

import pytest

from utils import lm_data
from utils.cli import UsageError


def test_registry_describes_every_layout_once():
    assert set(lm_data.LAYOUTS) == set(lm_data.TRAINABLE) <= set(lm_data.CORPORA)
    for name, corpus in lm_data.CORPORA.items():
        assert corpus.files and corpus.hub
        assert lm_data.HUB[name] == (corpus.hub, corpus.config, corpus.column)


def test_local_file_wins_and_rows_keep_line_breaks(tmp_path):
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.test.txt").write_text(" a b \n c d \n")
    assert lm_data.local_path("ptb", "test", str(tmp_path)).endswith("ptb/ptb.test.txt")
    assert lm_data.local_path("ptb", "train", str(tmp_path)) is None
    assert lm_data.corpus_rows("ptb", "test", str(tmp_path)) == [" a b \n", " c d \n"]


def test_jsonl_rows_are_the_text_fields(tmp_path):
    (tmp_path / "c4").mkdir()
    (tmp_path / "c4" / "c4_validation_2k.jsonl").write_text('{"text": "x y"}\n\n{"text": "z"}\n')
    assert lm_data.corpus_rows("c4", "validation", str(tmp_path)) == ["x y", "z"]


def test_offline_missing_split_names_the_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="wikitext-2-raw/wiki.test.raw"):
        lm_data.corpus_rows("wikitext2-raw", "test", str(tmp_path))


def test_load_splits_uses_the_registry_and_skips_missing_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.makedirs(tmp_path / "wikitext-2")
    for split, name in (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        (tmp_path / "wikitext-2" / name).write_text(f" {split} words \n")
    dsd = lm_data.load_splits("wikitext2", str(tmp_path))
    assert set(dsd) == {"train", "validation", "test"} and dsd["test"]["text"] == [" test words \n"]
    with pytest.raises(UsageError, match="unknown dataset"):
        lm_data.load_splits("wiki", str(tmp_path))
