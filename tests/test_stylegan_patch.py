"""stylegan_patch/apply.py on a loss.py fixture written here (laid out like upstream's, not a copy of it)."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import losses
from stylegan_patch import apply as patcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Our own small module with the three upstream loss lines guarded as upstream guards them (by the
# training phase: StyleGAN2-ADA's `if do_Dmain:`, StyleGAN3's `if phase in [...]:`, inside `with`
# blocks), with and without trailing comments.
FIXTURE = """\
# A stand-in for training/loss.py written for these tests.

import contextlib
import numpy as np
import torch
from collections import OrderedDict

#----------------------------------------------------------------------------

class TinyLoss:
    def losses(self, gen_logits, real_logits, phase='Dboth'):
        do_Gmain = True
        do_Dmain, do_Dr1 = True, False
        if do_Gmain:
            with contextlib.suppress():
                loss_Gmain = torch.nn.functional.softplus(-gen_logits) # -log(sigmoid(gen_logits))
        loss_Dgen = 0
        if do_Dmain:
            loss_Dgen = torch.nn.functional.softplus(gen_logits)
        if do_Dmain or do_Dr1:
            loss_Dreal = 0
            if phase in ['Dmain', 'Dboth']:
                loss_Dreal = torch.nn.functional.softplus(-real_logits)  # real images
        return loss_Gmain, loss_Dgen, loss_Dreal

#----------------------------------------------------------------------------
"""
AUTHORS_FIXTURE = os.path.join(REPO, "tests", "fixtures", "stylegan_authors_rlo_loss.py.txt")
GMAIN = "loss_Gmain = torch.nn.functional.softplus(-gen_logits) # -log(sigmoid(gen_logits))"


def write_clone(tmp_path, text=FIXTURE, newline="\n", bom=False):
    (tmp_path / "training").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "training" / "loss.py"
    data = text.replace("\n", newline).encode()
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def cli(*argv):
    return patcher.run_cli(patcher.main, patcher.parse_args([str(a) for a in argv]))


def load_module(path, name="patched_loss"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def helper_namespace(path):
    """Exec only the inserted helper block of a patched file."""
    text = path.read_text(encoding="utf-8-sig")
    block = text[text.index(patcher.BEGIN):text.index(patcher.END)]
    namespace = {}
    exec(compile(block, "helper", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("newline,bom", [("\n", False), ("\r\n", True)])
def test_patch_is_idempotent_and_reverts_byte_for_byte(tmp_path, newline, bom):
    path = write_clone(tmp_path, newline=newline, bom=bom)
    original = path.read_bytes()
    cli(tmp_path)
    once = path.read_bytes()
    assert once != original and patcher.BEGIN.encode() in once
    assert (tmp_path / "training" / ("loss.py" + patcher.BACKUP_SUFFIX)).read_bytes() == original
    assert once.count(b"_rlo_gan_loss(") == 4  # the definition and three calls
    assert b"softplus(-gen_logits)" not in once.replace(b"was: torch.nn.functional.softplus(-gen_logits)", b"")
    cli(tmp_path)
    assert path.read_bytes() == once
    cli(tmp_path, "--revert")
    assert path.read_bytes() == original
    assert not (tmp_path / "training" / ("loss.py" + patcher.BACKUP_SUFFIX)).exists()


def test_keeps_file_mode(tmp_path):
    path = write_clone(tmp_path)
    os.chmod(path, 0o755)
    cli(tmp_path)
    assert os.stat(path).st_mode & 0o777 == 0o755
    assert os.stat(str(path) + patcher.BACKUP_SUFFIX).st_mode & 0o777 == 0o755
    cli(tmp_path, "--revert")
    assert os.stat(path).st_mode & 0o777 == 0o755


def test_helper_goes_after_a_multiline_import(tmp_path):
    text = FIXTURE.replace("from collections import OrderedDict", "from collections import (OrderedDict,\n    deque)")
    path = write_clone(tmp_path, text=text)
    cli(tmp_path)
    patched = path.read_text()
    assert patched.index("    deque)\n") < patched.index(patcher.BEGIN) < patched.index("class TinyLoss")
    load_module(path, "multiline_import")


def test_reapply_updates_defaults(tmp_path):
    path = write_clone(tmp_path)
    original = path.read_bytes()
    cli(tmp_path, "--k", 2)
    cli(tmp_path, "--k", 5, "--loss", "ce")
    text = path.read_text()
    assert text.count(patcher.BEGIN) == 1
    assert "_RLO_DEFAULT_K = 5.0" in text and "_RLO_DEFAULT_LOSS = 'ce'" in text
    assert path.read_text() == patcher.patch_text(original.decode(), 5, "ce")
    cli(tmp_path, "--revert")
    assert path.read_bytes() == original


@pytest.mark.parametrize("text", [FIXTURE.replace("softplus(gen_logits)", "softplus(-gen_logits)"),
                                  "import torch\n\nx = 1\n"])
def test_refuses_without_the_three_lines(tmp_path, capsys, text):
    path = write_clone(tmp_path, text=text)
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        cli(tmp_path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loss_Dgen" in err
    assert path.read_bytes() == before
    assert os.listdir(tmp_path / "training") == ["loss.py"]


def test_refuses_missing_clone_and_unpatched_revert(tmp_path, capsys):
    for argv in ([tmp_path / "nowhere"], [tmp_path], [tmp_path, "--k", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            cli(*argv)
        assert exit_info.value.code == 2
    write_clone(tmp_path)
    with pytest.raises(SystemExit):
        cli(tmp_path, "--revert")
    assert "not patched" in capsys.readouterr().err


def test_revert_refuses_a_hand_edited_patched_line(tmp_path):
    path = write_clone(tmp_path)
    cli(tmp_path)
    edited = path.read_text().replace("_rlo_gan_loss(gen_logits)", "_rlo_gan_loss(gen_logits * 1)")
    path.write_text(edited)
    with pytest.raises(SystemExit) as exit_info:
        cli(tmp_path, "--revert")
    assert exit_info.value.code == 2 and path.read_text() == edited


def test_script_runs_from_the_command_line(tmp_path):
    path = write_clone(tmp_path, text="import torch\n")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "stylegan_patch", "apply.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert path.read_text() == "import torch\n"


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0, 3.7, 10.0])
def test_helper_matches_rooted_logit(tmp_path, monkeypatch, k):
    path = write_clone(tmp_path)
    cli(tmp_path, "--k", 99)  # the environment must win over the baked-in default
    helper = helper_namespace(path)["_rlo_gan_loss"]
    monkeypatch.setenv("RLO_K", str(k))
    monkeypatch.setenv("RLO_LOSS", "rlo")
    x = torch.cat([torch.linspace(-60, 60, 241), torch.tensor([-1e4, -300.0, 300.0, 1e4])])
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, ref = helper(x1), losses.rooted_logit(x2, k)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=0)
    assert torch.isfinite(ours).all() and torch.isfinite(x1.grad).all()


def test_helper_finite_in_low_precision_and_default_k(tmp_path, monkeypatch):
    path = write_clone(tmp_path)
    cli(tmp_path, "--k", 3)
    monkeypatch.delenv("RLO_K", raising=False)
    monkeypatch.delenv("RLO_LOSS", raising=False)
    helper = helper_namespace(path)["_rlo_gan_loss"]
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype, requires_grad=True)
        value = helper(x)
        value.sum().backward()
        assert torch.isfinite(value).all() and torch.isfinite(x.grad).all()
        torch.testing.assert_close(value, losses.rooted_logit(x.detach(), 3.0))


def test_ce_mode_is_upstream_softplus_and_bad_env_raises(tmp_path, monkeypatch):
    path = write_clone(tmp_path)
    cli(tmp_path)
    helper = helper_namespace(path)["_rlo_gan_loss"]
    monkeypatch.setenv("RLO_LOSS", "ce")
    x = torch.randn(100) * 20
    assert torch.equal(helper(x), F.softplus(-x))
    assert torch.equal(helper(-x), F.softplus(x))
    monkeypatch.setenv("RLO_LOSS", "hinge")
    with pytest.raises(ValueError, match="RLO_LOSS"):
        helper(x)
    monkeypatch.setenv("RLO_LOSS", "rlo")
    for bad in ("-1", "two", "inf"):
        monkeypatch.setenv("RLO_K", bad)
        with pytest.raises(ValueError, match="RLO_K"):
            helper(x)


def test_patched_module_uses_the_right_signs(tmp_path, monkeypatch):
    path = write_clone(tmp_path)
    original = load_module(path, "original_loss").TinyLoss()
    cli(tmp_path)
    patched = load_module(path).TinyLoss()
    gen, real = torch.randn(64) * 5, torch.randn(64) * 5
    monkeypatch.setenv("RLO_K", "2")
    g_main, d_gen, d_real = patched.losses(gen, real)
    torch.testing.assert_close(g_main, losses.rooted_logit(gen, 2.0))    # label +1 on fakes (generator)
    torch.testing.assert_close(d_gen, losses.rooted_logit(-gen, 2.0))    # label -1 on fakes
    torch.testing.assert_close(d_real, losses.rooted_logit(real, 2.0))   # label +1 on reals
    monkeypatch.setenv("RLO_LOSS", "ce")
    for ours, theirs in zip(patched.losses(gen, real), original.losses(gen, real)):
        assert torch.equal(ours, theirs)


def assert_refused(tmp_path, capsys, text, *words):
    """Patching `text` exits 2 with one `error:` line naming `words`, and touches nothing."""
    path = write_clone(tmp_path, text=text)
    with pytest.raises(SystemExit) as exit_info:
        cli(tmp_path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    for word in words:
        assert word in err
    assert path.read_text() == text
    assert os.listdir(tmp_path / "training") == ["loss.py"]
    return err


def test_patched_line_does_not_keep_the_stale_comment(tmp_path):
    path = write_clone(tmp_path)
    cli(tmp_path)
    line = next(s for s in path.read_text().splitlines() if "loss_Gmain =" in s)
    code = line.split("#", 1)[0]
    assert code.strip() == "loss_Gmain = _rlo_gan_loss(gen_logits)"
    assert line.endswith("# rlo-patch, was: torch.nn.functional.softplus(-gen_logits) # -log(sigmoid(gen_logits))")


@pytest.mark.parametrize("wrap,opener", [
    ("if use_ce:\n{line}\nelse:\n    pass", "if"),                # a branch chosen by something else
    ("if do_Gmain:\n{line}\nelse:\n    pass", "if"),              # a phase guard, but with an else branch
    ("for _ in range(1):\n{line}", "for"),
    ("try:\n{line}\nexcept ValueError:\n    pass", "try"),
])
def test_refuses_a_line_inside_a_block_upstream_does_not_have(tmp_path, capsys, wrap, opener):
    indent = " " * 16
    block = wrap.format(line="    " + GMAIN).replace("\n", "\n" + indent)
    text = FIXTURE.replace(GMAIN, block)
    err = assert_refused(tmp_path, capsys, text, "loss_Gmain", f"inside a {opener} block")
    assert "nothing was changed" in err


@pytest.mark.parametrize("tail", [" * 0.5", ".mean()", "; extra = 1", " + 0 # comment"])
def test_refuses_code_after_the_call(tmp_path, capsys, tail):
    text = FIXTURE.replace("softplus(gen_logits)\n", "softplus(gen_logits)" + tail + "\n")
    assert_refused(tmp_path, capsys, text, "loss_Dgen", "code after the softplus call", tail.strip()[:3])


def test_refuses_another_assignment_of_a_loss_variable(tmp_path, capsys):
    text = FIXTURE.replace("        return loss_Gmain", "        loss_Gmain = loss_Gmain * 2\n        return loss_Gmain")
    assert_refused(tmp_path, capsys, text, "loss_Gmain = loss_Gmain * 2", "modified")


def test_refuses_the_authors_modified_loss(tmp_path, capsys):
    with open(AUTHORS_FIXTURE, encoding="utf-8") as f:
        text = f.read()
    assert_refused(tmp_path, capsys, text, "rooted loss of its own", "torch.pow(1. + torch.exp(-gen_logits)")
    # without its rooted branches, the softplus lines still sit inside the authors' if/elif on `ls`
    ce_only = "\n".join(line for line in text.splitlines() if "kparam *" not in line and "elif" not in line)
    assert_refused(tmp_path, capsys, ce_only + "\n", "inside a if block")


@pytest.mark.parametrize("old,new", [
    ("_rlo_gan_loss(gen_logits)  #", "_rlo_gan_loss(gen_logits) * 2  #"),          # code appended
    ("_rlo_gan_loss(gen_logits)  #", "_rlo_gan_loss(-gen_logits)  #"),             # sign flipped
    ("was: torch.nn.functional.softplus(-gen_logits)", "was: torch.nn.functional.softplus(gen_logits)"),
    ("_rlo_gan_loss(gen_logits)  # rlo-patch, was: torch.nn.functional.softplus(-gen_logits) # -log(sigmoid(gen_logits))",
     "_rlo_gan_loss(gen_logits)"),                                                 # tag removed
    ("finfo(work).max) - 16.0", "finfo(work).max) - 6.0"),                         # helper edited
])
def test_revert_refuses_any_edit_of_the_patch_itself(tmp_path, capsys, old, new):
    path = write_clone(tmp_path)
    cli(tmp_path)
    text = path.read_text()
    assert old in text
    edited = text.replace(old, new, 1)
    path.write_text(edited)
    for argv in ([tmp_path, "--revert"], [tmp_path, "--k", 3]):
        with pytest.raises(SystemExit) as exit_info:
            cli(*argv)
        assert exit_info.value.code == 2 and "restore the backup by hand" in capsys.readouterr().err
        assert path.read_text() == edited


def test_revert_keeps_edits_elsewhere_and_the_backup(tmp_path):
    path = write_clone(tmp_path)
    backup = tmp_path / "training" / ("loss.py" + patcher.BACKUP_SUFFIX)
    cli(tmp_path)
    path.write_text(path.read_text().replace("return loss_Gmain,", "return (loss_Gmain),"))
    message = cli(tmp_path, "--revert")
    assert "backup left" in message
    assert path.read_text() == FIXTURE.replace("return loss_Gmain,", "return (loss_Gmain),")
    assert backup.read_text() == FIXTURE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_log_weight_cap_is_the_projects(dtype):
    scope = {}
    exec(patcher.HELPER.format(k=2.0, loss="rlo"), scope)  # the helper as inserted into loss.py
    assert scope["_rlo_log_weight_cap"](dtype) == pytest.approx(losses.log_weight_cap(dtype))
