"""User-facing errors: one clear line on stderr and exit status 2, never a traceback."""
import argparse
import importlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UsageError(Exception):
    """An error the user caused (bad flag value, missing data, unknown name, corrupt file)."""


def fail(message):
    """Print `error: message` on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """-h shows the description (the script's docstring) as written and each flag's default (unless the help
    already names it, or the default is an unset None / False / "")."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is argparse.SUPPRESS or default is None or default is False \
                or default == "" or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (unknown flag, bad choice, bad type) are one `error:` line and status 2, and whose
    -h shows defaults and the whole description."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        fail(message)


def registry_choice(module, registry, lower=True):
    """An argparse `type` accepting the keys of `module.registry`, imported only when a value is checked.

    `choices=` would import the registry (and torch with it) to print -h; this keeps -h instant and still
    lists the names when a wrong one is given."""
    def name(value):
        key = value.lower() if lower else value
        names = getattr(importlib.import_module(module), registry)
        if key not in names:
            raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(names)})")
        return key
    name.__name__ = registry.lower()
    return name


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
