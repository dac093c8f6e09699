"""scripts/stylegan_smoke.py: the smoke report from fake smoke_<loss>.json files."""
import json

import pytest

from scripts import stylegan_smoke as S
from utils.cli import run_cli


def _smoke_json(path, loss, ok=True):
    row = {"k": 2.0 if loss == "rlo" else None, "loss": loss, "max_rel_err_D": 5e-8, "max_rel_err_G": 1.2e-7,
           "mean_D_loss": 6.5, "mean_G_loss": 17.25, "n_D": 8, "n_G": 8, "ok": ok, "seconds": 2212.1,
           "stats_gap": 1.8e-8, "ticks": 2}
    argv = ["/somewhere/stylegan_patch/smoke.py", "/tmp/sg2", "--out", str(path.parent), "--loss", loss,
            "--check-only"]
    path.write_text(json.dumps({"argv": argv, "rows": [row]}))
    return str(path)


def test_report_table_rows_and_notes(tmp_path):
    files = [_smoke_json(tmp_path / "smoke_ce.json", "ce"), _smoke_json(tmp_path / "smoke_rlo.json", "rlo")]
    notes = tmp_path / "notes.md"
    notes.write_text("Setup: a fake clone.\n")
    S.main(S.parse_args([*files, "--notes", str(notes), "--out-dir", str(tmp_path / "out")]))
    text = (tmp_path / "out" / "stylegan_smoke.md").read_text()
    rows = json.loads((tmp_path / "out" / "stylegan_smoke.json").read_text())["rows"]
    assert [r["loss"] for r in rows] == ["ce", "rlo"]
    assert "| rlo | 2.0 | 2 | 8 | 8 | 1.2e-07 | 5.0e-08 | 1.8e-08 | 17.2500 | 6.5000 | 2212 | yes |" in text
    assert "| ce | - | 2 |" in text and "Every check passed" in text
    assert rows[1]["command"] == f"python -m stylegan_patch.smoke /tmp/sg2 --out {tmp_path} --loss rlo --check-only"
    assert f"`{rows[1]['command']}`" in text
    assert text.rstrip().endswith("Setup: a fake clone.")


def test_a_failed_check_is_said_and_a_bad_file_is_a_usage_error(tmp_path, capsys):
    files = [_smoke_json(tmp_path / "smoke_ce.json", "ce", ok=False)]
    S.main(S.parse_args([*files, "--notes", "", "--out-dir", str(tmp_path)]))
    assert "did NOT pass" in (tmp_path / "stylegan_smoke.md").read_text()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit) as stop:
        run_cli(S.main, S.parse_args([str(tmp_path / "bad.json"), "--out-dir", str(tmp_path)]))
    assert stop.value.code == 2 and "cannot read smoke results" in capsys.readouterr().err
