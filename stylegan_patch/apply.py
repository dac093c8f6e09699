"""Patch a StyleGAN2-ADA / StyleGAN3 clone so that its GAN losses can be the rooted loss (RLO).

    python stylegan_patch/apply.py PATH_TO_CLONE [--k 2] [--loss rlo|ce]    # patch (or update defaults)
    python stylegan_patch/apply.py PATH_TO_CLONE --revert                   # restore the original bytes

In the user's own training/loss.py (NVlabs/stylegan2-ada-pytorch or NVlabs/stylegan3) the three
non-saturating logistic losses (paper appendix A.5, eq. 20-21; upstream's softplus forms)

    loss_Gmain = softplus(-gen_logits)   ->  loss_Gmain = _rlo_gan_loss(gen_logits)    (label +1)
    loss_Dgen  = softplus(gen_logits)    ->  loss_Dgen  = _rlo_gan_loss(-gen_logits)   (label -1)
    loss_Dreal = softplus(-real_logits)  ->  loss_Dreal = _rlo_gan_loss(real_logits)   (label +1)

and a self-contained helper is inserted after the imports. _rlo_gan_loss(x) is softplus(-x) when
RLO_LOSS=ce and k * exp(softplus(-x) / k) (= k (1 + exp(-x))^(1/k), losses.rooted_logit, with the same
linear continuation above losses.log_weight_cap(dtype)) when RLO_LOSS=rlo; k is RLO_K. Both environment
variables are read on every call, so switching needs no further edit; --k / --loss set the defaults
used when they are unset. NVIDIA's file is never shipped: only the user's clone is edited.
"""
import ast
import os
import re
import sys

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import ArgumentParser, UsageError, run_cli  # noqa: E402
from utils.runio import atomic_write_bytes  # noqa: E402

LOSS_CHOICES = ("rlo", "ce")
BACKUP_SUFFIX = ".rlo-orig"
BEGIN = "# >>> rooted-loss patch (stylegan_patch/apply.py; undo with --revert) >>>"
END = "# <<< rooted-loss patch <<<"
TAG = "  # rlo-patch, was: "

# target variable -> (the logit it is computed from, the sign upstream's softplus argument carries)
TARGETS = {"loss_Gmain": ("gen_logits", "-"), "loss_Dgen": ("gen_logits", ""),
           "loss_Dreal": ("real_logits", "-")}
_SOFTPLUS = r"(?:torch\.nn\.functional|nn\.functional|F)\.softplus"
LINE_RE = re.compile(r"^(?P<head>\s*(?P<var>loss_Gmain|loss_Dgen|loss_Dreal)\s*=\s*)"
                     r"(?P<expr>" + _SOFTPLUS + r"\(\s*(?P<sign>-?)\s*(?P<arg>gen_logits|real_logits)\s*\))"
                     r"(?P<tail>.*)$", re.S)

HELPER = '''\
import math as _rlo_math
import os as _rlo_os
import torch as _rlo_torch

_RLO_DEFAULT_LOSS = {loss!r}  # used when the environment variable RLO_LOSS is unset ('rlo' or 'ce')
_RLO_DEFAULT_K = {k!r}  # used when RLO_K is unset


def _rlo_log_weight_cap(dtype):
    """As losses.log_weight_cap of the rooted-loss project: exp(t) is exact up to it, linear above."""
    work = _rlo_torch.float64 if dtype == _rlo_torch.float64 else _rlo_torch.float32
    return min(_rlo_math.log(_rlo_torch.finfo(work).max) - 16.0, _rlo_math.log(_rlo_torch.finfo(dtype).max) - 1.0)


def _rlo_gan_loss(x):
    """Loss of logits x for label +1: softplus(-x) (ce) or k * exp(softplus(-x) / k) (rlo, k=RLO_K)."""
    loss = _rlo_os.environ.get("RLO_LOSS", _RLO_DEFAULT_LOSS).strip().lower()
    if loss == "ce":
        return _rlo_torch.nn.functional.softplus(-x)
    if loss != "rlo":
        raise ValueError(f"RLO_LOSS must be 'rlo' or 'ce', got {{loss!r}}")
    raw = _rlo_os.environ.get("RLO_K", _RLO_DEFAULT_K)
    try:
        k = float(raw)
    except ValueError:
        k = float("nan")
    if not (k > 0 and k != float("inf")):
        raise ValueError(f"RLO_K must be a finite number > 0, got {{raw!r}}")
    work = _rlo_torch.float64 if x.dtype == _rlo_torch.float64 else _rlo_torch.float32
    z = -x.to(work)
    t = _rlo_torch.logaddexp(z, _rlo_torch.zeros_like(z)) / k  # softplus, as losses.py (no switch at 20)
    # exp(t) is continued linearly above the cap (same value and slope there), so no overflow
    tc = t.clamp(max=_rlo_log_weight_cap(x.dtype))
    return k * (_rlo_torch.exp(tc) * (1 + (t - tc)))
'''


# --------------------------------------------------------------------------------------- text edits
def helper_block(k, loss, newline="\n"):
    """The lines inserted into loss.py, markers included, each ending with `newline`."""
    body = [BEGIN] + HELPER.format(k=float(k), loss=loss).splitlines() + [END]
    return [line + newline for line in body]


def _split_newline(line):
    stripped = line.rstrip("\r\n")
    return stripped, line[len(stripped):]


def _find_targets(lines):
    """Index of each of the three upstream loss lines; UsageError naming what is missing or doubled."""
    found = {}
    for i, line in enumerate(lines):
        m = LINE_RE.match(_split_newline(line)[0])
        if m and TARGETS[m["var"]] == (m["arg"], m["sign"]):
            if m["var"] in found:
                raise UsageError(f"{m['var']} = softplus(...) appears twice; cannot tell which to patch")
            found[m["var"]] = i
    missing = [v for v in TARGETS if v not in found]
    if missing:
        wanted = ", ".join(f"{v} = softplus({TARGETS[v][1]}{TARGETS[v][0]})" for v in missing)
        raise UsageError(f"upstream StyleGAN loss line(s) not found: {wanted}; nothing was changed")
    return found


def _insert_at(lines):
    """Line index after the last top-level import that precedes the first top-level class/def."""
    try:
        body = ast.parse("".join(lines).lstrip("\ufeff")).body
    except SyntaxError:
        raise UsageError("loss.py is not valid Python; nothing was changed")
    where = 0
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            break
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            where = node.end_lineno  # multi-line imports end here
    return where


def patch_text(text, k=2.0, loss="rlo"):
    """Patched loss.py text from the original (unpatched) text; UsageError if it is not upstream's."""
    if BEGIN in text:
        raise UsageError("text is already patched; unpatch it first")
    lines = text.splitlines(keepends=True)
    found = _find_targets(lines)
    for var, i in found.items():
        content, nl = _split_newline(lines[i])
        m = LINE_RE.match(content)
        arg = ("-" if TARGETS[var][1] == "" else "") + m["arg"]  # label -1 for loss_Dgen
        lines[i] = f"{m['head']}_rlo_gan_loss({arg}){m['tail']}{TAG}{m['expr']}{nl}"
    at = _insert_at(lines)
    newline = "\r\n" if lines[0].endswith("\r\n") else "\n"
    if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
        raise UsageError("loss.py ends right after its imports; not an upstream StyleGAN loss.py")
    return "".join(lines[:at] + helper_block(k, loss, newline) + lines[at:])


def unpatch_text(text):
    """The original text back from patched text (inverse of patch_text, byte for byte)."""
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN)
        stop = next(i for i in range(start, len(lines)) if lines[i].rstrip("\r\n") == END)
    except StopIteration:
        raise UsageError("the rooted-loss patch markers are missing or damaged; restore the backup by hand")
    lines = lines[:start] + lines[stop + 1:]
    for i, line in enumerate(lines):
        content, nl = _split_newline(line)
        if TAG not in content:
            continue
        code, expr = content.rsplit(TAG, 1)
        lines[i] = re.sub(r"_rlo_gan_loss\(-?\w+\)", lambda _: expr, code, count=1) + nl
    original = "".join(lines)
    if "_rlo_gan_loss" in original:  # a patched line was edited by hand: do not guess
        raise UsageError("a patched loss line was edited after patching; restore the backup by hand")
    return original


# ------------------------------------------------------------------------------------------- files
def loss_file(path):
    """training/loss.py inside a clone (or `path` itself when it is a file)."""
    target = path if os.path.isfile(path) else os.path.join(path, "training", "loss.py")
    if not os.path.isfile(target):
        raise UsageError(f"{target} not found; expected a clone of NVlabs/stylegan2-ada-pytorch or "
                         "NVlabs/stylegan3 (PATH/training/loss.py)")
    return target


def read_text(path):
    """Bytes decoded so that encoding back gives the same bytes (BOM, CRLF and odd bytes kept)."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="surrogateescape")


def write_text(path, text, mode_from=None):
    """Atomic write that keeps the permission bits of `mode_from` (default: the file it replaces)."""
    source = mode_from or path
    mode = os.stat(source).st_mode & 0o7777 if os.path.exists(source) else None
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))
    if mode is not None:
        os.chmod(path, mode)


def apply(target, k, loss):
    """Patch `target` (or re-patch it with new defaults); returns a one-line summary."""
    text = read_text(target)
    original = unpatch_text(text) if BEGIN in text else text
    patched = patch_text(original, k, loss)
    backup = target + BACKUP_SUFFIX
    if BEGIN not in text or not os.path.exists(backup):  # an unpatched file is the newest original
        write_text(backup, original, mode_from=target)
    if patched == text:
        return f"{target} already patched (loss={loss}, k={k:g}); nothing to do"
    write_text(target, patched)
    verb = "updated" if BEGIN in text else "patched"
    return f"{verb} {target} (defaults RLO_LOSS={loss}, RLO_K={k:g}); backup {backup}"


def revert(target):
    """Restore the original bytes; the backup is removed when it matches what the markers undo."""
    text = read_text(target)
    backup = target + BACKUP_SUFFIX
    if BEGIN not in text:
        raise UsageError(f"{target} is not patched; nothing to revert")
    original = unpatch_text(text)
    write_text(target, original)
    if os.path.exists(backup) and read_text(backup) == original:
        os.remove(backup)
        return f"reverted {target}"
    return f"reverted {target} (edits made after patching are kept; backup left at {backup})"


# --------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", metavar="PATH_TO_CLONE", type=str,
                   help="a clone of NVlabs/stylegan2-ada-pytorch or NVlabs/stylegan3 (or its training/loss.py)")
    p.add_argument("--k", type=float, default=2.0, help="default k of the rooted loss when RLO_K is unset (paper: 2)")
    p.add_argument("--loss", type=str, default="rlo", choices=LOSS_CHOICES,
                   help="default loss when RLO_LOSS is unset: rlo (rooted) or ce (upstream softplus)")
    p.add_argument("--revert", action="store_true", help="restore the original loss.py byte for byte")
    return p.parse_args(argv)


def main(args):
    if not (args.k > 0 and args.k != float("inf")):
        raise UsageError(f"--k must be a finite number > 0, got {args.k}")
    target = loss_file(args.path)
    message = revert(target) if args.revert else apply(target, args.k, args.loss)
    print(message)
    return message


if __name__ == "__main__":
    run_cli(main, parse_args())
