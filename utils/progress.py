"""Progress of a long loop: a tqdm bar on a terminal; without one (nohup, SLURM, a pipe) a plain line every
`every` seconds, so a log shows that a long epoch is moving."""
import sys
import time


class Progress:
    """update() after each item; stats(**values) whenever fresh numbers are at hand (they are shown with the
    next bar refresh or line). enabled=False (e.g. on non-zero DDP ranks) shows nothing."""

    def __init__(self, total, desc, every=30.0, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.every = total, desc, every
        self.done, self.values = 0, {}
        self.start = self.last = time.monotonic()
        tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        if tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False, file=self.stream)
        self.lines = enabled and not tty and every > 0

    def update(self, n=1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def stats(self, **values):
        self.values = values
        if self.bar is not None:
            self.bar.set_postfix({key: f"{value:.4g}" for key, value in values.items()}, refresh=False)

    def line(self):
        elapsed = time.monotonic() - self.start
        rate = self.done / max(elapsed, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        shown = "".join(f" {key} {value:.4g}" for key, value in self.values.items())
        return f"{self.desc}: {self.done}/{self.total} ({rate:.2f}/s, {elapsed:.0f}s, ~{left:.0f}s left){shown}"

    def close(self):
        if self.bar is not None:
            self.bar.close()
