"""One rank of a 2-process gloo run, started by tests/test_distributed.py under torch.distributed.run.

Trains tiny models through the package's own helpers (loaders, make_learner, fit_phases) and writes each
rank's final weights to OUT/{name}.rank{r}.pt for the test to compare:

- lm_nodrop: an LM with (almost) no dropout, to compare with one process on the same global batches;
- {lm,classifier}_full / _resumed: a run, and the same run killed mid-epoch and resumed from `last.pt`.

It also tries OUT/locked, a run directory the test holds locked: every rank must fail, none wait.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from synth import Crash, KillAt, make_reviews

from ulmfit_lab.config import ClassifierConfig, ModelConfig, RunConfig, TrainConfig
from ulmfit_lab.logs import show_progress
from ulmfit_lab.models.awd_lstm import build_classifier, build_lm, classifier_layer_groups, lm_layer_groups
from ulmfit_lab.text.vocab import build_vocab, numericalize, tokenize
from ulmfit_lab.training import distributed
from ulmfit_lab.training.learner import fit_phases, make_learner
from ulmfit_lab.training.loaders import classifier_loaders, lm_loaders
from ulmfit_lab.training.rundir import RunLockedError, StageDir
from ulmfit_lab.training.schedules import Phase, unfreeze_phases

M = ModelConfig(emb_sz=8, n_hid=12, n_layers=2, bptt=8)
RUN = RunConfig(device="cpu", progress=False)
CPU = torch.device("cpu")
LM_TC = TrainConfig(epochs=2, lr=3e-3, bs=8)
CLF_TC = ClassifierConfig(epochs=3, lr=1e-2, bs=8, drop_mult=0.5)


def data():
    df = make_reviews(96, seed=5)
    tok = tokenize(df.text.tolist())
    vocab = build_vocab([tok], min_freq=1)
    return vocab, numericalize(tok, vocab), [0 if y == "neg" else 1 for y in df.label]


def lm_learner(ids, path, drop_mult=0.5):
    vocab, x, _ = ids
    dls = lm_loaders(x, x[:12], LM_TC.bs, M.bptt, False, CPU, seed=0)
    learn = make_learner(dls, build_lm(len(vocab), M, drop_mult), lm_layer_groups, LM_TC, RUN, CPU, [], path)
    return learn, [Phase(len(learn.opt.param_lists), LM_TC.epochs)]


def clf_learner(ids, path):
    vocab, x, y = ids
    dls = classifier_loaders(x, y, x[:16], y[:16], CLF_TC.bs, M.bptt, False, CPU, seed=0)
    model = build_classifier(len(vocab), 2, M, CLF_TC.drop_mult, [8])
    learn = make_learner(dls, model, classifier_layer_groups, CLF_TC, RUN, CPU, [accuracy], path)
    return learn, unfreeze_phases(len(learn.opt.param_lists), CLF_TC.epochs)


def save(out: Path, name: str, learn) -> None:
    state = {k: v.detach().clone() for k, v in distributed.unwrap(learn.model).state_dict().items()}
    torch.save(state, out / f"{name}.rank{distributed.rank()}.pt")


CASES = {"lm": (lm_learner, LM_TC), "classifier": (clf_learner, CLF_TC)}


def main(out: Path, cases: list[tuple[str, int, float | None]]) -> None:
    """`cases`: (model, batches before the kill, checkpoint_s: 0 = every batch, None = epoch ends only)."""
    distributed.setup(CPU)
    try:
        with distributed.main_lock(out / "locked"):
            pass
    except RunLockedError as e:
        (out / f"locked.rank{distributed.rank()}.txt").write_text(str(e))
    ids = data()
    if distributed.is_main():
        for d in ["nodrop", "lm", "classifier"] + [f"{m}_{n}_{c}" for m, n, c in cases]:
            (out / d).mkdir()
    dist.barrier()

    set_seed(0)
    learn, phases = lm_learner(ids, out / "nodrop", drop_mult=1e-6)
    fit_phases(learn, phases, LM_TC, StageDir(out / "nodrop", "k"))
    save(out, "lm_nodrop", learn)

    for name, (make, tc) in CASES.items():
        set_seed(0)
        learn, phases = make(ids, out / name)
        fit_phases(learn, phases, tc, StageDir(out / name, "k"))
        save(out, f"{name}_full", learn)

    for name, kill_after, every_s in cases:
        make, tc = CASES[name]
        stage = StageDir(out / f"{name}_{kill_after}_{every_s}", "k")
        set_seed(0)
        learn, phases = make(ids, stage.path)
        try:
            fit_phases(learn, phases, tc, stage, extra_cbs=[KillAt(kill_after)], checkpoint_s=every_s)
        except Crash:
            pass
        dist.barrier()  # as a relaunch would: rank 0 has finished writing last.pt before anyone reads it
        set_seed(1234)  # "new processes": other RNG states and initial weights
        learn, phases = make(ids, stage.path)
        fit_phases(learn, phases, tc, stage, checkpoint_s=every_s)
        save(out, f"{name}_resumed_{kill_after}_{every_s}", learn)
    distributed.teardown()


if __name__ == "__main__":
    out_dir, *specs = sys.argv[1:]  # specs: model:kill_after:checkpoint_s (none: epoch ends only)
    show_progress()  # the resume lines the test reads, as the command line prints them
    main(Path(out_dir), [(m, int(n), None if c == "none" else float(c))
                         for m, n, c in (s.split(":") for s in specs)])
