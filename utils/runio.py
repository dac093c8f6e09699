"""Run directories and atomic file writes shared by every entry script.

One run directory per run: config.json (arguments + git commit), metrics.jsonl (one line per epoch or
evaluation) and results.json (final numbers). Every write goes to a temporary file that is renamed into
place, so an interrupted run never leaves a half-written file.
"""
import hashlib
import json
import os
import subprocess
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_PREFIX = ".tmp-"


def git_commit():
    """The repository's HEAD commit (with '-dirty' if it has uncommitted changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _file_mode(path):
    """The mode to give a rewritten `path`: its current mode, else 0666 less the umask (as open() does)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder):
    """Make a rename durable: fsync the folder that holds the new name (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path, write):
    """write(tmp_path) into a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.
    Readers see the old file or the new one, never a part; the temporary file is removed on any failure."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; keep the mode a plain write would give
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    _atomic_write(path, write)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj, path):
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    import torch  # here, not at module level: scripts that never save a tensor stay light to import
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def clean_temp_files(folder):
    """Remove temporary files left in `folder` by a writer that was killed (kill -9) mid-write."""
    for name in os.listdir(folder):
        if name.startswith(TMP_PREFIX):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def append_jsonl(path, record):
    """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path):
    """Records of a JSONL file; a torn last line (a crash while writing it) is dropped, not an error."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return out


def write_config(run_dir, args):
    """config.json: the parsed arguments and the git commit that ran them."""
    config = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    config["git_commit"] = git_commit()
    atomic_write_json(os.path.join(run_dir, "config.json"), config)
    return config


# ----- the run directory ----------------------------------------------------------------------------------------
RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "checkpoint.pt", "best.pt")


def versions():
    """Versions of the libraries that decide the numbers (read from package metadata: no heavy imports)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torch", "transformers", "torchvision", "timm", "peft", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def set_threads(n):
    """--threads: CPU threads for torch (0 keeps torch's default). The one place that handles the flag."""
    import torch as _torch
    if n and n > 0:
        _torch.set_num_threads(n)
    return _torch.get_num_threads()


def add_run_args(parser, default_out="a name built from the settings, under runs/", resume_flags=("--resume",),
                 out_flags=("--out",)):
    """--out, --resume, --overwrite and --threads, the same in every entry script (resume_flags=(): a script
    with nothing to resume or its own --resume; out_flags: older spellings of --out kept for old commands)."""
    parser.add_argument(*out_flags, dest="out", default=None, help=f"run directory (default: {default_out})")
    if resume_flags:
        parser.add_argument(*resume_flags, dest="resume", action="store_true",
                            help="continue the run in --out (refused if its defining settings differ)")
    parser.add_argument("--overwrite", action="store_true",
                        help="move an existing run in --out aside (to OUT.old-TIMESTAMP) and start afresh")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: torch's default; 1 is much faster on an oversubscribed CPU)")
    return parser


def config_hash(config, keys):
    """A short, stable hash of config's `keys` (for default run names that differ whenever the run does)."""
    blob = json.dumps({key: config.get(key) for key in sorted(keys)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:6]


def config_differences(saved, now, keys):
    """'--key saved (saved) vs now (now)' for each of `keys` the saved config has with another value."""
    return [f"--{key.replace('_', '-')} {saved.get(key)!r} (saved) vs {now.get(key)!r} (now)"
            for key in keys if key in saved and saved.get(key) != now.get(key)]


def holds_run(path):
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in RUN_FILES)


class RunDir:
    """One run directory: config.json (arguments, argv, git commit, versions, threads), metrics.jsonl (one line
    per epoch or evaluation), results.json (final numbers), and whatever checkpoints the script keeps there.

    A directory that holds a run is never silently replaced: without resume it is refused (UsageError naming
    --resume and --overwrite); with overwrite the old run is moved aside to PATH.old-TIMESTAMP; with resume the
    saved config must agree on the `defining` keys (what defines the run), else UsageError naming the difference.
    A lock file keeps two processes out of one directory. OS errors (read-only, full disk, a file in the way)
    become one-line UsageErrors.
    """

    def __init__(self, path, config, resume=False, overwrite=False, defining=(), main_process=True):
        self.path, self.main = path, main_process
        self._lock, self._fresh = None, False
        self.saved_config = self.read_json("config.json") if holds_run(path) else None
        if not main_process:  # the main process checks and writes; the others only read
            self.config = dict(self.saved_config if resume and self.saved_config else config)
            return
        from utils.cli import UsageError
        try:
            self._open(config, resume, overwrite, defining)
        except OSError as err:
            self.release()
            raise UsageError(f"cannot write run directory {path}: {err.strerror or err}") from None
        except BaseException:
            self.release()
            raise

    def _open(self, config, resume, overwrite, defining):
        from utils.cli import UsageError
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"run directory {path} exists and is not a directory")
        exists = holds_run(path)
        if resume and not exists:
            raise UsageError(f"--resume: {path} holds no run to resume")
        if exists and resume and self.saved_config is not None:
            self._check_same(config, defining)
        if exists and not resume:
            if not overwrite:
                raise UsageError(f"{path} already holds a run; pass --resume to continue it or "
                                 "--overwrite to move it aside and start afresh")
            self._move_aside()
        os.makedirs(path, exist_ok=True)
        self._acquire_lock()
        clean_temp_files(path)
        self._fresh = not (resume and exists)
        self.config = self._write_config(config, resume and exists)

    def _move_aside(self):
        import time
        aside = f"{self.path.rstrip(os.sep)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(self.path, aside)
        print(f"moved the old run in {self.path} aside to {aside}", flush=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Release the lock; a new run that failed before writing anything but config.json leaves nothing
        behind, so that running the corrected command again is not refused."""
        if exc_type is not None and self.main and self._fresh and os.path.isdir(self.path) \
                and set(os.listdir(self.path)) <= {"config.json", ".lock"}:
            for name in os.listdir(self.path):
                os.unlink(self.file(name))
            os.rmdir(self.path)
        self.release()

    def _check_same(self, config, defining):
        from utils.cli import UsageError
        diffs = config_differences(self.saved_config, config, defining)
        if diffs:
            raise UsageError(f"cannot resume {self.path}: it was run with other settings: " + "; ".join(diffs))

    def _acquire_lock(self):
        import fcntl
        from utils.cli import UsageError
        self._lock = open(os.path.join(self.path, ".lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise UsageError(f"{self.path} is in use by another process") from None

    def release(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _write_config(self, config, resuming):
        import sys
        record = dict(config)
        if resuming and self.saved_config is not None:
            record = dict(self.saved_config)
            changed = {key: value for key, value in config.items() if record.get(key, value) != value}
            record.setdefault("resumes", []).append({"argv": sys.argv, "git_commit": git_commit(),
                                                     "changed": changed})
            record.update(changed)  # what is in effect now (only settings that may change on resume differ)
        else:
            record.update(argv=sys.argv, git_commit=git_commit(), versions=versions(),
                          threads=_torch_threads())
        atomic_write_json(self.file("config.json"), record)
        return record

    def file(self, name):
        return os.path.join(self.path, name)

    def read_json(self, name):
        try:
            with open(self.file(name), encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def log(self, record):
        """Append one line to metrics.jsonl (main process only)."""
        if self.main:
            append_jsonl(self.file("metrics.jsonl"), record)

    def metrics(self):
        return read_jsonl(self.file("metrics.jsonl"))

    def trim_metrics(self, keep):
        """Keep only the metric lines for which keep(record) is true (e.g. epochs up to the checkpoint's)."""
        records = self.metrics()
        kept = [r for r in records if keep(r)]
        if len(kept) != len(records) and self.main:
            atomic_write_text(self.file("metrics.jsonl"),
                              "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in kept))
        return kept

    def finish(self, results, name="results.json"):
        if self.main:
            atomic_write_json(self.file(name), results)
        return results


def _torch_threads():
    import sys
    torch_mod = sys.modules.get("torch")
    return torch_mod.get_num_threads() if torch_mod is not None else None
