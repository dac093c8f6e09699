"""Report builder for the StyleGAN2-ADA patch's smoke check: results/stylegan_smoke.md and .json from the
OUT/smoke_<loss>.json files that `python -m stylegan_patch.smoke` writes (one table row per checked run).

    python -m scripts.stylegan_smoke /tmp/sgsmoke/smoke_ce.json /tmp/sgsmoke_rlo/smoke_rlo.json
"""
import json
import os
import shlex

from stylegan_patch import smoke
from utils import report
from utils.cli import ArgumentParser, UsageError, run_cli

NAME = "stylegan_smoke"
NOTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes", "stylegan_smoke.md")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("smoke_json", nargs="+", help="smoke_<loss>.json files written by stylegan_patch.smoke")
    p.add_argument("--notes", default=NOTES, help="a markdown file appended as the report's Notes section")
    p.add_argument("--name", default=NAME, help="report name: results/<name>.md/.json")
    p.add_argument("--out-dir", default=None, help="where the report goes (default: results/)")
    return p.parse_args(argv)


def command_of(argv):
    """The smoke command that wrote a file, as a `python -m` line (argv[0] is the path of smoke.py)."""
    return " ".join(["python -m stylegan_patch.smoke", *map(shlex.quote, argv[1:])])


def read_rows(paths):
    """Flat rows, one per checked run, each with the command that checked it."""
    rows = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            found = [dict(row, command=command_of(data["argv"])) for row in data["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"cannot read smoke results {path}: {err}") from None
        rows += found
    return rows


def report_lines(rows, notes, paths):
    ok = all(r["ok"] for r in rows)
    lines = ["# StyleGAN2-ADA patch in upstream's real training loop (smoke check, CPU, current torch)", "",
             f"Every check {'passed' if ok else 'did NOT pass'}: each logged loss element against its formula, "
             "and upstream's stats.jsonl against the trace. Table from the check commands "
             "(s = upstream's `Timing/total_sec` of the run):", "",
             *(f"- `{c}`" for c in dict.fromkeys(r["command"] for r in rows)), "",
             smoke.table(rows), "",
             f"Report: `python -m scripts.stylegan_smoke {' '.join(map(shlex.quote, paths))}`", ""]
    return lines + notes


def main(args):
    rows = read_rows(args.smoke_json)
    notes = report.notes_section(args.notes)
    path = report.write_report(args.name, report_lines(rows, notes, args.smoke_json), rows, out_dir=args.out_dir)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main, parse_args())
