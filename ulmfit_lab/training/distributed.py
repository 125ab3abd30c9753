"""Data-parallel training on PyTorch's own engine: torch.distributed + `DistributedDataParallel`.

A run launched by `torchrun`, `accelerate launch` or `ulmfit-lab ... --nproc N` (one process per GPU;
NCCL on GPUs, gloo on CPUs) joins the process group here. The rules every stage follows:

- every rank trains: each takes its share of every global batch (see `loaders`), DDP averages the
  gradients, so all ranks hold the same weights; `bs` in the config is the global batch;
- rank 0 alone writes the run directory; the others wait where they later read what it wrote;
- work that needs no GPU and writes files (reading and tokenizing data, evaluation) runs on rank 0 alone
  (`on_main`): inside it rank 0 acts as a single process, and the others get its result, or its error.

fastai's own `fastai.distributed` is not used: its `DistributedTrainer` needs `accelerate` for what is a
`DistributedDataParallel(model)` call, and its `DistributedDL` broadcasts through CUDA only (no CPU/gloo)
and gives each rank whole batches of half the steps, which breaks an LM's streams across steps.
"""

from __future__ import annotations

import faulthandler
import hashlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..fileio import write_json
from ..logs import TO_STDERR
from .rundir import RunLockedError, run_lock

T = TypeVar("T")
log = logging.getLogger(__name__)

# Rank 0 may work alone for hours (tokenizing a large corpus) while the others wait; their wait, and every
# message between ranks, goes through a gloo group with this timeout. The gradients' group keeps torch's default.
WAIT = timedelta(hours=24)
_control: dist.ProcessGroup | None = None
_solo = False  # inside `on_main` on rank 0: act as a single process


def launched() -> bool:
    """Started by torchrun / accelerate launch (they set these), so a process group is expected."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def active() -> bool:
    """In a process group, and not inside a rank-0-only section."""
    return dist.is_available() and dist.is_initialized() and not _solo


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def main_only(record: logging.LogRecord) -> bool:
    """A logging filter that passes records on rank 0 only: the other ranks would repeat its progress lines.

    `logging.getLogger(__name__).addFilter(distributed.main_only)` in a module whose messages all are.
    """
    return is_main()


def setup(device: torch.device) -> torch.device:
    """Join the process group if launched as one of N processes; return this rank's device.

    NCCL when the run uses CUDA (each rank on GPU `LOCAL_RANK`), gloo on the CPU. Without a launcher this
    does nothing and returns `device`. A rank sent SIGUSR1 prints every thread's Python stack to stderr and
    goes on (`kill -USR1 PID`): where each rank of a run that seems stuck is waiting.
    """
    global _control
    if dist.is_initialized() or not launched():
        return _rank_device(device)
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible: "
                               "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _control = dist.new_group(backend="gloo", timeout=WAIT)
    if is_main():
        log.info("process group: %d process(es), backend %s", world(), dist.get_backend())
    log.info("rank %d of %d on %s", rank(), world(), _rank_device(device))  # every rank: which GPU it took
    return _rank_device(device)


def _rank_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def teardown() -> None:
    global _control
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control = None


# ---------------------------------------------------------------- messages between ranks (gloo, CPU objects)


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def gather(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj, group=_control)
    return out


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over the ranks (float64, so token counts stay exact)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=_control)
    return t.tolist()


@contextmanager
def _alone() -> Iterator[None]:
    global _solo
    _solo, was = True, _solo
    try:
        yield
    finally:
        _solo = was


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only, as a single process; every rank returns its result or raises its error.

    For work that writes files and needs no GPU (the data stage, evaluation, writing a stage's marker).
    """
    if not active():
        return fn()
    if is_main():
        try:
            with _alone():
                out: tuple[str, Any] = ("ok", fn())
        except BaseException as e:
            broadcast(("error", _portable(e)))
            raise
        return broadcast(out)[1]
    status, value = broadcast(None)
    if status == "error":
        raise value
    return value


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0, then on the others (fastai's `rank0_first`): rank 0 fills the caches
    (archive extraction, tokens, downloads) that the others then only read."""
    if not active():
        return fn()
    if is_main():
        try:
            out = fn()
        except BaseException as e:
            broadcast(_portable(e))
            raise
        broadcast(None)
        return out
    err = broadcast(None)
    if err is not None:
        raise err
    return fn()


def _portable(e: BaseException) -> BaseException:
    """The error itself if it pickles (so a DataError stays one on every rank), else a RuntimeError."""
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"rank 0 failed: {type(e).__name__}: {e}")


def agree(flag: bool) -> bool:
    """Rank 0's decision (e.g. 'checkpoint now', taken by its clock) on every rank; cheap enough per batch."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.uint8)
    dist.broadcast(t, src=0, group=_control)
    return bool(t.item())


@contextmanager
def main_lock(run_dir: Path) -> Iterator[None]:
    """The run directory's lock, held by rank 0; if another run holds it, every rank raises, none waits."""
    if not active():
        with run_lock(run_dir):
            yield
        return
    if not is_main():
        err = broadcast(None)
        if err is not None:
            raise RunLockedError(err)
        yield
        return
    with ExitStack() as stack:
        try:
            stack.enter_context(run_lock(run_dir))
        except RunLockedError as e:
            broadcast(str(e))
            raise
        broadcast(None)
        yield


# ---------------------------------------------------------------- checks


def check_batch_sizes(cfg: Any, n: int) -> list[str]:
    """`bs` is the global batch: each of the `n` processes takes bs / n rows of it."""
    sections = [("classifier", cfg.classifier)]
    if cfg.lm_finetune.enabled:
        sections.append(("lm_finetune", cfg.lm_finetune))
    if cfg.lm_pretrain.source == "scratch":
        sections.append(("lm_pretrain", cfg.lm_pretrain))
    return [f"{name}.bs={tc.bs} is the global batch and must be a multiple of the {n} processes "
            f"(each takes bs / {n}); set {name}.bs={max(n, tc.bs // n * n)} or another multiple of {n}"
            for name, tc in sections if tc.bs % n]


def weights_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer, to compare ranks' models without moving them."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def verify_in_sync(model: nn.Module, stage_dir: Path) -> None:
    """After training: every rank must hold rank 0's weights. Writes `distributed.json`; raises if not."""
    if not active():
        return
    digests = gather(weights_digest(model))
    info = {"world_size": world(), "backend": dist.get_backend(), "weights_digest_per_rank": digests,
            "in_sync": len(set(digests)) == 1}
    if is_main():
        write_json(Path(stage_dir) / "distributed.json", info)
    if not info["in_sync"]:
        raise RuntimeError(f"{Path(stage_dir).name}: the ranks' weights differ after training ({digests}); "
                           "gradients were not synchronised. Please report this with distributed.json")


# ---------------------------------------------------------------- the fastai side


class _DDP(DistributedDataParallel):
    """DDP that forwards fastai's `reset` (the AWD-LSTM's hidden state), as `fastai.distributed` patches it."""

    def reset(self):
        if hasattr(self.module, "reset"):
            self.module.reset()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class DDPTrainer(Callback):
    """Trains through `DistributedDataParallel`; validates the plain model; reduces counts across ranks.

    DDP is rebuilt at each `fit`, because it syncs only the parameters that require a gradient when it is
    built, and gradual unfreezing changes them between fits. It wraps the model for the training batches
    only: validation runs the plain model (no collective per batch, so ranks may hold unequal validation
    shares), and its metric sums are added up over the ranks once at its end.
    """

    order = 1  # before_train after ModelResetter (0); after_validate before Recorder (50)

    def before_fit(self):
        module = unwrap(self.learn.model)
        self.learn.model = module
        dev = next(module.parameters()).device
        self.ddp = _DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None)

    def before_train(self):
        self.learn.model = self.ddp

    def after_train(self):
        self.learn.model = self.ddp.module
        self._sync_buffers()
        tokens, samples = all_sum([getattr(self.learn, "tokens_seen", 0), getattr(self.learn, "samples_seen", 0)])
        self.learn.tokens_seen, self.learn.samples_seen = int(tokens), int(samples)

    def _sync_buffers(self):
        # DDP broadcasts rank 0's buffers (BatchNorm statistics) before each training forward; the last batch
        # updates every rank's own copy, so broadcast once more to validate and save the same model everywhere
        for b in self.ddp.module.buffers():
            dist.broadcast(b.data, src=0)

    def after_validate(self):
        # our loaders detach without fastai's per-batch all_gather; sum each metric's total and count once here
        mets = [self.learn.recorder.loss, *self.learn.metrics]
        for m in mets:
            if not (hasattr(m, "total") and hasattr(m, "count")):
                raise NotImplementedError(f"metric {getattr(m, 'name', m)!r} cannot be summed across ranks "
                                          "(only loss-like averages: total / count)")
        sums = all_sum([v for m in mets for v in (float(m.total), float(m.count))])
        for i, m in enumerate(mets):
            m.total, m.count = torch.tensor(sums[2 * i], dtype=torch.float64), sums[2 * i + 1]

    def after_fit(self):
        self.learn.model = self.ddp.module
        del self.ddp


def prepare_learner(learn: Any, device: torch.device) -> None:
    """Add DDP to a Learner when running in a process group; other ranks show no progress bars."""
    if not active():
        return
    if not is_main():
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *_: None
    learn.add_cb(DDPTrainer())


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """On GPUs, BatchNorm (the classifier head) over the global batch, as one process would compute it.
    (torch's SyncBatchNorm runs on GPUs only; on CPUs each rank normalises its own share.)"""
    if active() and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


# ---------------------------------------------------------------- rows of a batch split over ranks


def take_rows(t: torch.Tensor, r: int, n: int, dim: int = 1) -> torch.Tensor:
    """Rank r's rows of a global batch: rows r, r+n, r+2n, ... (how `loaders` shards every batch)."""
    return t[(slice(None),) * dim + (slice(r, None, n),)]


def merge_rows(parts: list[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """Inverse of `take_rows`: the global batch from every rank's rows."""
    n = len(parts)
    shape = list(parts[0].shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    out = parts[0].new_empty(shape)
    for r, p in enumerate(parts):
        out[(slice(None),) * dim + (slice(r, None, n),)] = p
    return out


# ---------------------------------------------------------------- launching


def launch(nproc: int, argv: list[str]) -> int:
    """Re-run `ulmfit-lab argv` as `nproc` processes on this machine under torch.distributed.run."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ulmfit_lab.cli", *argv]
    log.info("launching: %s", " ".join(cmd[1:]), extra=TO_STDERR)  # stdout is the ranks' own
    return subprocess.call(cmd)
