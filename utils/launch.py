"""torchrun, with one difference: a stop signal the workers answer cleanly ends the launcher with status 0.

    python -m utils.launch --standalone --nproc-per-node 2 train.py --dataset cifar10 ...   # torchrun's flags

train.py answers SIGTERM/SIGINT by saving a resumable checkpoint and exiting 0. Under plain torchrun the
elastic agent also receives the signal (from `timeout`, scancel or `kill -- -PGID`, or as the only target),
forwards it to the workers, waits for them, and then re-raises it: torchrun exits 1 with a traceback although
every worker stopped cleanly, so a scheduler records a failure. This launcher runs torchrun unchanged and,
when that signal was SIGTERM or SIGINT and every worker exited 0, exits 0; any other outcome is torchrun's.
"""
import signal
import sys

from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.api import SubprocessContext

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def worker_exit_codes():
    """Record, in the returned dict, every worker's exit status when torchrun closes its processes."""
    codes, real_close = {}, SubprocessContext._close

    def close(self, death_sig, timeout=30):
        real_close(self, death_sig, timeout)
        codes.update({rank: h.proc.returncode for rank, h in self.subprocess_handlers.items()})
    SubprocessContext._close = close
    return codes, lambda: setattr(SubprocessContext, "_close", real_close)


def main(argv=None):
    codes, restore = worker_exit_codes()
    try:
        torchrun.main(argv)
    except SignalException as err:
        if err.sigval not in STOP_SIGNALS or not codes or any(code != 0 for code in codes.values()):
            raise
        print(f"launch: {signal.Signals(err.sigval).name}: all {len(codes)} workers stopped cleanly "
              "(resume with --resume)", file=sys.stderr, flush=True)
    finally:
        restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
