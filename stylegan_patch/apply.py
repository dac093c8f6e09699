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

This file is run in the clone's own environment (upstream documents Python 3.7 and PyTorch 1.7.1), so
it uses the standard library alone, nothing newer than Python 3.7, and none of this project's modules.
"""
import argparse
import ast
import bisect
import io
import os
import re
import sys
import tempfile
import tokenize

LOSS_CHOICES = ("rlo", "ce")
BACKUP_SUFFIX = ".rlo-orig"
BEGIN = "# >>> rooted-loss patch (stylegan_patch/apply.py; undo with --revert) >>>"
END = "# <<< rooted-loss patch <<<"
TAG = "  # rlo-patch, was: "

# target variable -> (the logit it is computed from, the sign upstream's softplus argument carries)
TARGETS = {"loss_Gmain": ("gen_logits", "-"), "loss_Dgen": ("gen_logits", ""),
           "loss_Dreal": ("real_logits", "-")}
_SOFTPLUS = r"(?:torch\.nn\.functional|nn\.functional|F)\.softplus"
_CALL = _SOFTPLUS + r"\(\s*(?P<sign>-?)\s*(?P<arg>gen_logits|real_logits)\s*\)"
# upstream's line: the assignment alone, optionally followed by a comment (its `# -log(...)`)
LINE_RE = re.compile(r"^(?P<head>\s*(?P<var>loss_Gmain|loss_Dgen|loss_Dreal)\s*=\s*)(?P<expr>" + _CALL + r")"
                     r"(?P<tail>\s*(?:#.*)?)$", re.S)
# the same call followed by anything at all: used only to name what follows it in the refusal
LOOSE_RE = re.compile(r"^\s*(?:loss_Gmain|loss_Dgen|loss_Dreal)\s*=\s*" + _CALL + r"(?P<rest>.*)$", re.S)
PATCHED_RE = re.compile(r"^(?P<head>\s*(?P<var>loss_Gmain|loss_Dgen|loss_Dreal)\s*=\s*)"
                        r"_rlo_gan_loss\((?P<arg>-?(?:gen_logits|real_logits))\)$", re.S)
# rooted-loss arithmetic a modified loss.py may already carry, e.g. the authors' StyleGAN2-ADA-RLO
# `k * torch.pow(1. + torch.exp(-gen_logits), 1/k)`, or a stray call of this patch's helper
ROOTED_RE = re.compile(r"pow\(\s*1\.?0*\s*\+\s*(?:torch\.|np\.)?exp\("
                       r"|\(\s*1\.?0*\s*\+\s*(?:torch\.|np\.)?exp\([^()]*\)\s*\)\s*\*\*"
                       r"|exp\(\s*" + _SOFTPLUS + r"|\b_rlo_gan_loss\b|\brooted_logit\b")
# upstream guards the three lines only by the training phase: `if do_Gmain:`, `if do_Dmain or do_Dr1:`
# (StyleGAN2-ADA) or `if phase in ['Dmain', 'Dboth']:` (StyleGAN3)
PHASE_NAME_RE = re.compile(r"^do_\w+$")

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
DEFAULTS_RE = re.compile(r"^_RLO_DEFAULT_(?P<name>LOSS|K) = (?P<value>.*?)  #", re.M)


class UsageError(Exception):
    """An error the user caused; main() callers print it as one `error:` line (as utils.cli does)."""


# --------------------------------------------------------------------------------------- text edits
def helper_block(k, loss, newline="\n"):
    """The lines inserted into loss.py, markers included, each ending with `newline`."""
    body = [BEGIN] + HELPER.format(k=float(k), loss=loss).splitlines() + [END]
    return [line + newline for line in body]


def _split_newline(line):
    stripped = line.rstrip("\r\n")
    return stripped, line[len(stripped):]


def _parse(text):
    """(ast tree, sorted line numbers where logical lines end); UsageError if it is not Python."""
    source = text.lstrip("\ufeff")
    try:
        tree = ast.parse(source)
        ends = [tok.end[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.NEWLINE]
    except (SyntaxError, ValueError, UnicodeError, tokenize.TokenError):
        raise UsageError("loss.py is not valid Python; nothing was changed")
    return tree, ends


def _parents(tree):
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _is_phase_test(test):
    """True for upstream's phase guards: do_X, do_X or do_Y, phase in [...] / phase == '...'."""
    if isinstance(test, ast.Name):
        return bool(PHASE_NAME_RE.match(test.id))
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return all(_is_phase_test(value) for value in test.values)
    if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "phase":
        return len(test.ops) == 1 and isinstance(test.ops[0], (ast.In, ast.Eq))
    return False


def _foreign_block(node, parents):
    """The first enclosing statement that upstream does not put around a loss line, or None."""
    node = parents.get(node)
    while node is not None and not isinstance(node, (ast.FunctionDef, ast.Module)):
        if isinstance(node, ast.If):
            if not _is_phase_test(node.test) or node.orelse:
                return node
        elif not isinstance(node, ast.With):
            return node
        node = parents.get(node)
    return None


def _assigned_targets(node):
    """Names among the three loss variables that statement `node` assigns."""
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    else:
        return []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and n.id in TARGETS]


def _is_zero(node):
    """`loss_Dgen = 0`: upstream's initialisers, left alone."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        return False
    try:
        return ast.literal_eval(node.value) == 0
    except ValueError:
        return False


def _refuse_rooted(lines):
    for i, line in enumerate(lines):
        code = line.split("#", 1)[0]
        if ROOTED_RE.search(code):
            raise UsageError(f"line {i + 1} already computes a rooted loss of its own ({code.strip()}); "
                             "this is a modified loss.py (e.g. the authors' StyleGAN2-ADA-RLO one), not "
                             "upstream's: patch a clean clone instead; nothing was changed")


def _check_target(node, line, parents):
    """UsageError unless `line` (the statement `node`) is one of upstream's three loss lines."""
    where = f"line {node.lineno} ({line.strip()})"
    m = LINE_RE.match(line)
    loose = LOOSE_RE.match(line)
    if m is None and loose is not None:
        raise UsageError(f"{where} has code after the softplus call ({loose.group('rest').strip()}); "
                         "patching only the call would change what that code means; nothing was changed")
    if m is None or TARGETS[m.group("var")] != (m.group("arg"), m.group("sign")):
        raise UsageError(f"{where} assigns a loss variable with something other than upstream's "
                         "softplus line; this loss.py was modified; nothing was changed")
    block = _foreign_block(node, parents)
    if block is not None:
        kind = type(block).__name__.lower()
        raise UsageError(f"{where} sits inside a {kind} block at line {block.lineno} that upstream does not "
                         "have (it guards the line by the training phase only); this loss.py was "
                         "modified; nothing was changed")
    return m


def _find_targets(lines, tree):
    """Index of each of the three upstream loss lines; UsageError naming what is wrong or missing."""
    parents = _parents(tree)
    found = {}
    for node in ast.walk(tree):
        names = _assigned_targets(node)
        if not names or _is_zero(node):
            continue
        m = _check_target(node, _split_newline(lines[node.lineno - 1])[0], parents)
        var = m.group("var")
        if var in found:
            raise UsageError(f"{var} = softplus(...) appears twice; cannot tell which to patch")
        found[var] = node.lineno - 1
    missing = [v for v in TARGETS if v not in found]
    if missing:
        wanted = ", ".join(f"{v} = softplus({TARGETS[v][1]}{TARGETS[v][0]})" for v in missing)
        raise UsageError(f"upstream StyleGAN loss line(s) not found: {wanted}; nothing was changed")
    return found


def _insert_at(tree, ends):
    """Line index after the last top-level import that precedes the first top-level class/def."""
    where = 0
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            break
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            # a multi-line import ends at the first logical-line end at or after its first line
            where = ends[bisect.bisect_left(ends, node.lineno)]
    return where


def patch_text(text, k=2.0, loss="rlo"):
    """Patched loss.py text from the original (unpatched) text; UsageError if it is not upstream's."""
    if BEGIN in text:
        raise UsageError("text is already patched; unpatch it first")
    lines = text.splitlines(keepends=True)
    tree, ends = _parse(text)
    _refuse_rooted(lines)
    found = _find_targets(lines, tree)
    for var, i in found.items():
        content, nl = _split_newline(lines[i])
        m = LINE_RE.match(content)
        arg = ("-" if TARGETS[var][1] == "" else "") + m.group("arg")  # label -1 for loss_Dgen
        # upstream's comment (`# -log(sigmoid(gen_logits))`) describes the old expression: keep it after
        # `was:` so that it reads as part of the original line, which --revert puts back
        lines[i] = f"{m.group('head')}_rlo_gan_loss({arg}){TAG}{m.group('expr')}{m.group('tail')}{nl}"
    at = _insert_at(tree, ends)
    newline = "\r\n" if lines[0].endswith("\r\n") else "\n"
    if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
        raise UsageError("loss.py ends right after its imports; not an upstream StyleGAN loss.py")
    return "".join(lines[:at] + helper_block(k, loss, newline) + lines[at:])


def _helper_span(lines):
    """(start, stop) of the marker lines; UsageError unless the block is exactly one this file wrote."""
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    stops = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    if len(starts) != 1 or len(stops) != 1 or stops[0] < starts[0]:
        raise UsageError("the rooted-loss patch markers are missing or damaged; restore the backup by hand")
    start, stop = starts[0], stops[0]
    block = lines[start:stop + 1]
    defaults = {m.group("name"): m.group("value") for m in DEFAULTS_RE.finditer("".join(block))}
    try:
        loss, k = ast.literal_eval(defaults["LOSS"]), ast.literal_eval(defaults["K"])
        expected = helper_block(k, loss, _split_newline(block[0])[1])
    except (KeyError, ValueError, SyntaxError, TypeError):
        expected = None
    if block != expected:
        raise UsageError("the helper between the rooted-loss patch markers was edited after patching; "
                         "restore the backup by hand")
    return start, stop


def _unpatch_line(number, content):
    """The original line back from a patched one; UsageError if either half was edited."""
    code, was = content.split(TAG, 1)
    m = PATCHED_RE.match(code)
    original = LINE_RE.match(m.group("head") + was) if m else None
    if original is not None:
        arg, sign = TARGETS[original.group("var")]
        same_source = (original.group("arg"), original.group("sign")) == (arg, sign)
        same_call = m.group("arg") == ("" if sign else "-") + arg
        if original.group("var") == m.group("var") and same_source and same_call:
            return original.group(0)
    raise UsageError(f"patched line {number} was edited after patching ({content.strip()}); "
                     "restore the backup by hand")


def unpatch_text(text):
    """The original text back from patched text (inverse of patch_text, byte for byte).

    Refuses (UsageError) when the helper block or any of the three patched lines was edited, or when
    `_rlo_gan_loss` is called anywhere else: only the patch's own edits are undone, never guessed.
    """
    lines = text.splitlines(keepends=True)
    start, stop = _helper_span(lines)
    kept = lines[:start] + lines[stop + 1:]
    numbers = list(range(1, start + 1)) + list(range(stop + 2, len(lines) + 1))  # line numbers in `text`
    for i, (number, line) in enumerate(zip(numbers, kept)):
        content, nl = _split_newline(line)
        if TAG in content:
            kept[i] = _unpatch_line(number, content) + nl
        elif "_rlo_gan_loss" in content:
            raise UsageError(f"line {number} calls _rlo_gan_loss but is not one of the patched lines; "
                             "restore the backup by hand")
    return "".join(kept)


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
    """Atomic write (temporary file, fsync, rename) keeping the permission bits of `mode_from`.

    `mode_from` defaults to the file being replaced. Done here rather than with utils.runio so that
    the patcher needs no project module (and no torch) in the clone's environment.
    """
    source = mode_from or path
    mode = os.stat(source).st_mode & 0o7777 if os.path.exists(source) else 0o644
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-rlo-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8", errors="surrogateescape"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
def fail(message):
    """Print `error: message` on stderr and exit with status 2 (the project's convention)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error:` line and status 2 (as utils.cli.ArgumentParser)."""

    def error(self, message):
        fail(message)


def run_cli(main, args):
    """Call main(args), turning a UsageError into a one-line exit with status 2."""
    try:
        return main(args)
    except UsageError as err:
        fail(str(err))


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
