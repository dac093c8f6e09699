"""User-facing errors: one clear line on stderr and exit status 2, never a traceback."""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UsageError(Exception):
    """An error the user caused (bad flag value, missing data, unknown name, corrupt file)."""


def fail(message):
    """Print `error: message` on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown flag, bad choice, bad type) are one `error:` line and status 2."""

    def error(self, message):
        fail(message)


def run_cli(main, args):
    """Call main(args), turning a UsageError into a one-line exit with status 2."""
    try:
        return main(args)
    except UsageError as err:
        fail(str(err))


def default_data_dir():
    """$RLO_DATA_DIR, else ../shared/data beside the checkout if present, else ./data."""
    env = os.environ.get("RLO_DATA_DIR")
    if env:
        return env
    shared = os.path.join(os.path.dirname(REPO), "shared", "data")
    return shared if os.path.isdir(shared) else os.path.join(REPO, "data")


def require_file(path, layout_hint):
    """Raise UsageError naming the expected layout when `path` is missing."""
    if not os.path.exists(path):
        raise UsageError(f"{path} not found; expected {layout_hint}")
    return path
