"""stylegan_patch/apply.py runs where StyleGAN2-ADA's users run it: Python 3.7+, standard library only.

Upstream documents Python 3.7 and PyTorch 1.7.1, so the patcher is checked three ways: its source (and
the helper it inserts) uses no feature newer than Python 3.7 and imports only the standard library; it
runs under a python that cannot import torch or this project; and, where one is installed, under a
real Python 3.7 (set RLO_PYTHON37, or have pyenv's 3.7 or a python3.7 on PATH).
"""
import ast
import glob
import os
import re
import shutil
import subprocess
import sys
import tokenize

import pytest

from stylegan_patch import apply as patcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPLY = os.path.join(REPO, "stylegan_patch", "apply.py")

LOSS_PY = """\
import torch

class Loss:
    def accumulate_gradients(self, phase, gen_logits, real_logits):
        do_Gmain = do_Dmain = True
        if do_Gmain:
            loss_Gmain = torch.nn.functional.softplus(-gen_logits) # -log(sigmoid(gen_logits))
        loss_Dgen = 0
        if do_Dmain:
            loss_Dgen = torch.nn.functional.softplus(gen_logits)
            loss_Dreal = torch.nn.functional.softplus(-real_logits)
"""

NEWER_THAN_37_NODES = ("NamedExpr", "Match", "TryStar", "TypeAlias")  # 3.8, 3.10, 3.11, 3.12
NEWER_THAN_37_ATTRIBUTES = {"end_lineno", "end_col_offset", "removeprefix", "removesuffix",
                            "is_relative_to", "bit_count", "prod", "isqrt", "cache", "pairwise"}
GENERIC_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "type"}  # list[int] needs 3.9
FSTRING_SELF_DOC = re.compile(r"\{[^{}!:]*[^=!<>]=\s*(?:![rsa])?(?::[^{}]*)?\}")  # f"{x=}" needs 3.8


def py37_problems(source):
    """Constructs in `source` that Python 3.7 cannot run; empty when there are none."""
    tree = ast.parse(source)
    problems = []
    for node in ast.walk(tree):
        name = type(node).__name__
        if name in NEWER_THAN_37_NODES:
            problems.append(f"line {node.lineno}: {name}")
        if isinstance(node, ast.arguments) and getattr(node, "posonlyargs", []):
            problems.append("positional-only parameters")
        if isinstance(node, ast.Attribute) and node.attr in NEWER_THAN_37_ATTRIBUTES:
            problems.append(f"line {node.lineno}: .{node.attr}")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in GENERIC_BUILTINS:
            problems.append(f"line {node.lineno}: {node.value.id}[...]")
        if isinstance(node, ast.With) and source.splitlines()[node.lineno - 1].rstrip().endswith("with ("):
            problems.append(f"line {node.lineno}: parenthesised context managers")
    for tok in tokenize.generate_tokens(iter(source.splitlines(keepends=True)).__next__):
        if tok.type == tokenize.STRING and re.match(r"^[rbuRBU]*[fF]", tok.string) and FSTRING_SELF_DOC.search(tok.string):
            problems.append(f"line {tok.start[0]}: f-string '=' specifier")
    return problems


def imported_modules(source):
    """(top-level module names imported anywhere, whether a relative import is used)."""
    names, relative = set(), False
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            relative = relative or node.level > 0
            names.add((node.module or "").split(".")[0])
    return names, relative


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_the_checker_catches_newer_features():
    newer = ['def f(a, /, b):\n    pass\n', 'if (n := 1):\n    pass\n', 'x = f"{n=}"\n',
             'def f(node):\n    return node.end_lineno\n', 'def f(x: list[int]):\n    pass\n',
             'match x:\n    case 1:\n        pass\n', '"a".removeprefix("b")\n']
    for source in newer:
        assert py37_problems(source), source
    assert py37_problems('x = f"{a == b} {c!r:>4} {d:=^9}"\n') == []


def test_patcher_source_and_helper_use_only_python37_features():
    source = read(APPLY)
    assert py37_problems(source) == []
    helper = "".join(patcher.helper_block(2.0, "rlo"))
    assert py37_problems(helper) == []


def test_patcher_imports_only_the_standard_library():
    names, relative = imported_modules(read(APPLY))
    assert not relative
    stdlib = sys.stdlib_module_names
    assert names <= stdlib, names - stdlib
    helper_names, _ = imported_modules("".join(patcher.helper_block(2.0, "rlo")))
    assert helper_names == {"math", "os", "torch"}  # the helper runs inside the clone, next to upstream's torch


def run_patcher(python, clone, *argv, flags=()):
    cmd = [python, *flags, APPLY, str(clone), *argv]
    return subprocess.run(cmd, cwd=str(clone), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def check_round_trip(python, tmp_path, flags=()):
    """Patch, re-patch with other defaults, refuse a bad file, revert: all from `python`."""
    (tmp_path / "training").mkdir()
    loss = tmp_path / "training" / "loss.py"
    loss.write_bytes(LOSS_PY.encode())
    for argv in ([], ["--k", "5", "--loss", "ce"]):
        proc = run_patcher(python, tmp_path, *argv, flags=flags)
        assert proc.returncode == 0, proc.stderr
    patched = loss.read_text()
    assert "_RLO_DEFAULT_K = 5.0" in patched and patched.count("_rlo_gan_loss(") == 4
    proc = run_patcher(python, tmp_path, "--revert", flags=flags)
    assert proc.returncode == 0, proc.stderr
    assert loss.read_bytes() == LOSS_PY.encode() and os.listdir(tmp_path / "training") == ["loss.py"]
    loss.write_text(LOSS_PY.replace("softplus(gen_logits)", "softplus(gen_logits) * 0.5"))
    proc = run_patcher(python, tmp_path, flags=flags)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_patcher_runs_with_a_python_that_has_no_torch(tmp_path):
    # -I: ignore PYTHON* variables and the user site; -S: no site-packages, hence no torch
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", "import torch"], stderr=subprocess.PIPE)
    assert probe.returncode != 0, "this python finds torch even with -I -S; the test would prove nothing"
    check_round_trip(sys.executable, tmp_path, flags=("-I", "-S"))


def python37():
    """A working Python 3.7 interpreter, or None."""
    candidates = [os.environ.get("RLO_PYTHON37"), shutil.which("python3.7")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.7*/bin/python3.7")))
    for python in filter(None, candidates):
        try:
            out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip() == b"(3, 7)":
            return python
    return None


@pytest.mark.skipif(python37() is None, reason="no Python 3.7 installed (set RLO_PYTHON37 to one)")
def test_patcher_runs_under_python37(tmp_path):
    check_round_trip(python37(), tmp_path, flags=("-I",))
