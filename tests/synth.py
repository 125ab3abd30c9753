"""The tests' tiny data (the package's toy reviews) and a simulated crash for resume tests."""

from fastai.callback.core import Callback

from ulmfit_lab.toy import make_reviews, review  # noqa: F401


class Crash(Exception):
    pass


class KillAt(Callback):
    """Dies after `n` training batches in all (as SIGKILL would, but in-process; under DDP every rank at the
    same batch)."""

    order = 99

    def __init__(self, n: int):
        self.n = n

    def after_batch(self):
        if self.training:
            self.n -= 1
            if self.n == 0:
                raise Crash("killed")
