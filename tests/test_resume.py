"""A run killed mid-epoch resumes from `last.pt` and ends with exactly the weights of an uninterrupted run."""

import numpy as np
import pytest
import torch
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from synth import KillAt, make_reviews

from ulmfit_lab.config import ClassifierConfig, LMPretrainConfig, ModelConfig, RunConfig, TrainConfig
from ulmfit_lab.models.awd_lstm import build_classifier, build_lm, classifier_layer_groups, lm_layer_groups
from ulmfit_lab.text.corpus import DocIds
from ulmfit_lab.text.vocab import build_vocab, numericalize, tokenize, write_ids
from ulmfit_lab.training.learner import fit_phases, make_learner
from ulmfit_lab.training.loaders import classifier_loaders, lm_loaders
from ulmfit_lab.training.rundir import StageDir
from ulmfit_lab.training.schedules import Phase, unfreeze_phases

M = ModelConfig(emb_sz=8, n_hid=12, n_layers=2, bptt=8)
RUN = RunConfig(device="cpu", progress=False)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    df = make_reviews(96, seed=5)
    tok = tokenize(df.text.tolist())
    vocab = build_vocab([tok], min_freq=1)
    mapped = DocIds.from_dataset(write_ids(tok, vocab, tmp_path_factory.mktemp("ids") / "ids.arrow"))
    return {"memory": (vocab, numericalize(tok, vocab), [0 if y == "neg" else 1 for y in df.label]),
            "arrow": (vocab, mapped, [0 if y == "neg" else 1 for y in df.label])}  # what the stages read


def _lm_learner(ids, path):
    vocab, x, _ = ids
    dls = lm_loaders(x, x[:12], 4, M.bptt, False, CPU, seed=0)
    tc = TrainConfig(epochs=2, lr=3e-3)
    return make_learner(dls, build_lm(len(vocab), M, 0.5), lm_layer_groups, tc, RUN, CPU, [], path), tc


def _lm_sampled_learner(ids, path):
    # the sampled softmax draws from torch's RNG: a resumed run must draw the same words
    vocab, x, _ = ids
    dls = lm_loaders(x, x[:12], 4, M.bptt, False, CPU, seed=0)
    tc = LMPretrainConfig(epochs=2, lr=3e-3, softmax_samples=16)
    counts = np.bincount(np.concatenate([np.asarray(d) for d in x]), minlength=len(vocab))
    return make_learner(dls, build_lm(len(vocab), M, 0.5), lm_layer_groups, tc, RUN, CPU, [], path, lm=True,
                        lm_counts=counts), tc


def _clf_learner(ids, path):
    vocab, x, y = ids
    dls = classifier_loaders(x, y, x[:16], y[:16], 8, M.bptt, False, CPU, seed=0)
    cc = ClassifierConfig(epochs=3, lr=1e-2, bs=8, drop_mult=0.5)
    model = build_classifier(len(vocab), 2, M, cc.drop_mult, [8])
    return make_learner(dls, model, classifier_layer_groups, cc, RUN, CPU, [accuracy], path), cc


def _weights(learn):
    return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


@pytest.mark.parametrize("kind,kill_after,every_s,source", [
    ("lm", 5, 0.0, "memory"), ("lm", 17, 0.0, "memory"), ("classifier", 6, 0.0, "memory"),
    ("classifier", 13, 0.0, "memory"),
    # only epoch-end checkpoints: resumed at an epoch / a phase start
    ("lm", 60, None, "memory"), ("classifier", 20, None, "memory"),
    # the memory-mapped ids the stages read
    ("lm", 17, 0.0, "arrow"), ("classifier", 13, 0.0, "arrow"), ("lm", 60, None, "arrow"),
    ("lm_sampled", 17, 0.0, "arrow")])
def test_killed_mid_epoch_resumes_exactly(ids, tmp_path, kind, kill_after, every_s, source):
    make = {"lm": _lm_learner, "lm_sampled": _lm_sampled_learner, "classifier": _clf_learner}[kind]
    ids = ids[source]

    def phases(learn, tc):
        n = len(learn.opt.param_lists)
        return [Phase(n, tc.epochs)] if kind.startswith("lm") else unfreeze_phases(n, tc.epochs)

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    set_seed(0)
    learn, tc = make(ids, tmp_path / "a")
    fit_phases(learn, phases(learn, tc), tc, StageDir(tmp_path / "a", "k"))
    want = _weights(learn)
    n_batches = len(learn.dls.train)
    assert kill_after < n_batches * tc.epochs  # the kill lands inside training

    set_seed(0)
    learn, tc = make(ids, tmp_path / "b")
    stage = StageDir(tmp_path / "b", "k")
    with pytest.raises(Exception, match="killed"):
        fit_phases(learn, phases(learn, tc), tc, stage, extra_cbs=[KillAt(kill_after)], checkpoint_s=every_s)
    assert (tmp_path / "b" / "last.pt").is_file()

    set_seed(1234)  # a new process: other global RNG states, other initial weights
    learn, tc = make(ids, tmp_path / "b")
    fit_phases(learn, phases(learn, tc), tc, stage, checkpoint_s=every_s)
    got = _weights(learn)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{kind}: {k} differs after resume")
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(rows_a) == len(rows_b)


def test_time_budget_pauses_with_a_checkpoint_and_the_rerun_finishes_identically(ids, tmp_path):
    import time

    from ulmfit_lab.training.learner import TrainingPaused

    ids = ids["memory"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    set_seed(0)
    learn, tc = _lm_learner(ids, tmp_path / "a")
    fit_phases(learn, [Phase(3, tc.epochs)], tc, StageDir(tmp_path / "a", "k"))
    want = _weights(learn)

    stage = StageDir(tmp_path / "b", "k")
    set_seed(0)
    learn, tc = _lm_learner(ids, tmp_path / "b")
    with pytest.raises(TrainingPaused, match="rerun the same command"):
        fit_phases(learn, [Phase(3, tc.epochs)], tc, stage, deadline=time.time())
    set_seed(99)
    learn, tc = _lm_learner(ids, tmp_path / "b")
    fit_phases(learn, [Phase(3, tc.epochs)], tc, stage)
    for k, v in _weights(learn).items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)


def test_cli_pause_exit_code_and_resume(tmp_path, tiny_csvs, cache_dir):
    from conftest import CONFIGS, run_cli

    args = ["lm-finetune", str(CONFIGS / "tiny.yaml"), f"data.train={tiny_csvs['train']}",
            f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"]
    paused = run_cli(*args, "run.stop_after_minutes=0.00001", check=False)
    assert paused.returncode == 3 and "rerun the same command" in paused.stderr and "Traceback" not in paused.stderr
    assert (tmp_path / "run" / "lm_finetune" / "last.pt").is_file()
    assert not (tmp_path / "run" / "lm_finetune" / "DONE.json").exists()
    done = run_cli(*args)
    assert "resuming" in done.stdout and (tmp_path / "run" / "lm_finetune" / "DONE.json").is_file()
