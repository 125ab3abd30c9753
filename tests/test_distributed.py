"""Data-parallel training: sharded loaders, and real 2-process gloo runs (torch.distributed.run) checked
against one process: ranks in sync, rank 0 the only writer, same samples seen, similar results, exact resume.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, ROOT
from fastai.torch_core import set_seed
from synth import make_reviews

from ulmfit_lab.cli import main
from ulmfit_lab.text.vocab import PAD, build_vocab, numericalize, tokenize
from ulmfit_lab.training.loaders import classifier_loaders, lm_loaders, shard_batches
from ulmfit_lab.training.rundir import StageDir, run_lock

CPU = torch.device("cpu")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its ranks in sessions of their own: not in its group)."""
    try:
        kids = [int(k) for t in Path(f"/proc/{pid}/task").iterdir() for k in (t / "children").read_text().split()]
    except OSError:
        return []
    return kids + [d for k in kids for d in _descendants(k)]


def _run(cmd: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `cmd` to the end; if it hangs, fail with every process's Python stack (faulthandler on SIGUSR1, set
    up by `ulmfit_lab.training.distributed.setup`) instead of waiting out a long timeout with nothing to show.
    These runs take ~15 s alone; 300 s leaves room for a loaded CI machine."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            procs = _descendants(proc.pid)
            for pid in procs:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGUSR1)
            time.sleep(2)
            for pid in [proc.pid, *procs]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"still running after {timeout:.0f} s: {' '.join(cmd[2:])}\nstdout:\n{out[-3000:]}\n"
                        f"stderr, with the ranks' stacks:\n{err[-12000:]}")
    assert proc.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return _run(cmd, env, ROOT / "tests")


# ---------------------------------------------------------------- sharding, in one process


def test_shard_batches_split_every_batch_between_ranks():
    idxs = list(range(10, 33))  # 23 items: batches of 8, 8, 7
    shares = [shard_batches(idxs, 8, r, 2) for r in range(2)]
    assert shares[0][:4] == [10, 12, 14, 16] and shares[1][:4] == [11, 13, 15, 17]
    assert sorted(shares[0] + shares[1]) == idxs and len(shares[0]) == 12 and len(shares[1]) == 11
    assert shard_batches(idxs, 8, 0, 1) == idxs
    # a last batch smaller than the number of ranks is repeated, so that every rank takes that step
    padded = [shard_batches(list(range(9)), 8, r, 3, pad=True) for r in range(3)]
    assert [len(p) for p in padded] == [4, 4, 3] and padded[1][-1] == 8 and padded[2][-1] == 8


@pytest.fixture(scope="module")
def ids():
    df = make_reviews(76, seed=2)
    tok = tokenize(df.text.tolist())
    vocab = build_vocab([tok], min_freq=1)
    return numericalize(tok, vocab), [0 if y == "neg" else 1 for y in df.label]


def _epoch(dl, seed=0):
    np.random.seed(seed)  # SortedDL shuffles with numpy's global RNG
    return list(dl)


def test_lm_ranks_take_their_streams_of_the_global_batch(ids):
    x, _ = ids
    glob = _epoch(lm_loaders(x, x[:8], 6, 8, False, CPU, seed=0, rank=0, world=1).train)
    ranks = [_epoch(lm_loaders(x, x[:8], 6, 8, False, CPU, seed=0, rank=r, world=2).train) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(glob) > 10
    for step, (g, a, b) in enumerate(zip(glob, *ranks)):
        for r, (xb, yb) in enumerate((a, b)):
            assert xb.shape[0] == 3 and xb.shape[1] <= 8
            assert torch.equal(xb, g[0][r::2]) and torch.equal(yb, g[1][r::2]), step
        assert not torch.equal(a[0], b[0])  # every rank reads other text at every step


def test_classifier_ranks_take_length_sorted_shares_of_each_batch(ids):
    x, y = ids  # 76 texts in batches of 8: the last batch has 4, two for each rank
    glob = _epoch(classifier_loaders(x, y, x, y, 8, 8, False, CPU, seed=0, rank=0, world=1).train)
    ranks = [_epoch(classifier_loaders(x, y, x, y, 8, 8, False, CPU, seed=0, rank=r, world=2).train) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(glob) == 10

    def texts(xb):
        return [tuple(row[row != PAD].tolist()) for row in xb]

    for g, a, b in zip(glob, *ranks):
        for r, (xb, yb) in enumerate((a, b)):
            assert texts(xb) == texts(g[0])[r::2] and torch.equal(yb, g[1][r::2])
            lens = [len(t) for t in texts(xb)]
            assert lens == sorted(lens, reverse=True)  # BPT3C needs each rank's batch sorted too
    seen = sum(len(a[1]) + len(b[1]) for a, b in zip(*ranks))
    assert seen == len(x)


def test_loaders_fork_no_worker_processes(ids):
    # fastai's SortedDL forks one worker per CPU core at every epoch by default; a fork from a process running
    # gloo's and OpenMP's threads can hang in the child (seen here: a 2-rank run stuck in its validation loader)
    x, y = ids
    dls = [*classifier_loaders(x, y, x, y, 8, 8, False, CPU).loaders, *lm_loaders(x, x[:8], 6, 8, False, CPU).loaders]
    assert [dl.fake_l.num_workers for dl in dls] == [0, 0, 0, 0]


def test_last_classifier_batch_too_small_for_batchnorm_is_dropped(ids):
    x, y = ids
    x, y = x[:19], y[:19]  # 8 + 8 + 3: two ranks would get 2 and 1 rows of the last; BatchNorm needs 2 each
    ranks = [_epoch(classifier_loaders(x, y, x, y, 8, 8, False, CPU, seed=0, rank=r, world=2).train) for r in range(2)]
    assert [[len(b[1]) for b in r] for r in ranks] == [[4, 4], [4, 4]]
    one = _epoch(classifier_loaders(x, y, x, y, 8, 8, False, CPU, seed=0, rank=0, world=1).train)
    assert sorted(len(b[1]) for b in one) == [3, 8, 8]  # one process keeps it


# ---------------------------------------------------------------- 2 processes through the training helper


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_worker")
    # LM killed mid-epoch (hidden states of both ranks in the checkpoint); classifier killed mid-epoch, and
    # resumed from a phase's start (epoch-end checkpoints only: each rank's RNG)
    with run_lock(out / "locked"):
        proc = _torchrun("ddp_worker.py", str(out), "lm:35:0", "classifier:13:0", "classifier:20:none")
    return out, proc


def test_locked_run_dir_fails_on_every_rank(worker_run):
    out, _ = worker_run
    for r in range(2):
        assert "in use by another ulmfit-lab process" in (out / f"locked.rank{r}.txt").read_text()


def _load(out, name, rank=0):
    return torch.load(out / f"{name}.rank{rank}.pt", weights_only=True)


def test_ranks_hold_identical_weights(worker_run):
    out, _ = worker_run
    names = {p.name.split(".rank")[0] for p in out.glob("*.rank0.pt")}
    assert len(names) == 6
    for name in names:
        a, b = _load(out, name, 0), _load(out, name, 1)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs between ranks"


def test_resume_is_exact_with_two_processes(worker_run):
    out, proc = worker_run
    assert "lm_35_0.0: resuming phase 0 epoch 1 at batch" in proc.stdout  # LM: mid-epoch, both ranks' hidden states
    assert "resuming at phase 1, epoch 0, batch 1" in proc.stdout
    assert "resuming at phase 1, epoch 0, batch 0" in proc.stdout  # classifier: at a phase start
    for name, full in (("lm_resumed_35_0.0", "lm_full"), ("classifier_resumed_13_0.0", "classifier_full"),
                       ("classifier_resumed_20_None", "classifier_full")):
        got, want = _load(out, name), _load(out, full)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{name}: {k}")


def test_two_processes_match_one_on_the_same_global_batches(worker_run, tmp_path):
    """Without dropout, 2 ranks x bs/2 rows compute the same mean gradients as one process with bs rows:
    the weights agree up to float rounding (summation order), far below what one step changes."""
    import ddp_worker as w

    from ulmfit_lab.training.learner import fit_phases

    out, _ = worker_run
    set_seed(0)
    learn, phases = w.lm_learner(w.data(), tmp_path, drop_mult=1e-6)
    start = {k: v.clone() for k, v in learn.model.state_dict().items()}
    fit_phases(learn, phases, w.LM_TC, StageDir(tmp_path, "k"))
    one, two = learn.model.state_dict(), _load(out, "lm_nodrop")
    for k in one:
        moved = (one[k] - start[k]).abs().max()
        diff = (one[k] - two[k]).abs().max()
        assert moved > 1e-3 and diff < 1e-3 * moved, (k, float(moved), float(diff))


# ---------------------------------------------------------------- the CLI: --nproc 2 against one process


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, tiny_csvs, cache_dir):
    run_dir = tmp_path_factory.mktemp("ddp") / "tiny"
    args = ["run", str(CONFIGS / "tiny.yaml"), "--nproc", "2", f"data.train={tiny_csvs['train']}",
            f"data.test={tiny_csvs['test']}", f"run.dir={run_dir}", f"run.cache_dir={cache_dir}"]
    proc = _run([sys.executable, "-m", "ulmfit_lab.cli", *args], dict(ENV), ROOT, timeout=600)
    return {"dir": run_dir, "proc": proc}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # torchrun through the CLI (the DDP tests above stay in the default suite)
def test_cli_nproc_2_runs_both_ranks_in_sync(ddp_run):
    out = ddp_run["proc"].stdout
    assert "rank 0 of 2 on cpu" in out and "rank 1 of 2 on cpu" in out and "backend gloo" in out
    for stage in ("lm_finetune", "classifier"):
        info = json.loads((ddp_run["dir"] / stage / "distributed.json").read_text())
        assert info["world_size"] == 2 and info["backend"] == "gloo"
        digests = info["weights_digest_per_rank"]
        assert len(digests) == 2 and digests[0] == digests[1] and info["in_sync"]
    assert out.count('"run_dir"') == 1  # one summary: rank 0's


@pytest.mark.slow  # torchrun through the CLI (the DDP tests above stay in the default suite)
def test_cli_nproc_2_rank0_alone_writes(ddp_run, tiny_run):
    def files(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())

    extra = {"lm_finetune/distributed.json", "classifier/distributed.json"}
    assert files(ddp_run["dir"]) == sorted(set(files(tiny_run["dir"])) | extra)
    for stage in ("lm_finetune", "classifier"):  # appended logs: one writer, one line per epoch
        for log in ("metrics.jsonl", "lr_trace.jsonl"):
            assert len(_rows(ddp_run["dir"] / stage / log)) == len(_rows(tiny_run["dir"] / stage / log))
    assert ddp_run["proc"].stdout.count("lm_finetune phase 0 epoch 1:") == 1


@pytest.mark.slow  # torchrun through the CLI (the DDP tests above stay in the default suite)
def test_cli_nproc_2_matches_one_process(ddp_run, tiny_run):
    """Same data, same global batches: every epoch sees the same samples and tokens; validation (sharded and
    summed) gives the same loss for the same weights; trained results agree within the noise of dropout."""
    one, two = tiny_run["dir"], ddp_run["dir"]
    for stage in ("lm_finetune", "classifier"):
        r1, r2 = _rows(one / stage / "metrics.jsonl"), _rows(two / stage / "metrics.jsonl")
        assert [(r["train_samples"], r["train_tokens"]) for r in r1] == \
               [(r["train_samples"], r["train_tokens"]) for r in r2]
        assert all(r["world_size"] == 2 for r in r2)
    s1 = json.loads((one / "lm_finetune" / "summary.json").read_text())
    s2 = json.loads((two / "lm_finetune" / "summary.json").read_text())
    assert s2["valid_loss_before"] == pytest.approx(s1["valid_loss_before"], rel=1e-5)  # same weights, same data
    assert s2["valid_loss"] == pytest.approx(s1["valid_loss"], rel=0.01)
    assert s2["valid_loss"] < s2["valid_loss_before"] - 0.1
    # the classifier: the tiny task's valid loss jumps between epochs in one process too; both must learn it
    acc = [json.loads((d / "evaluate" / "metrics.json").read_text())["accuracy"] for d in (one, two)]
    assert min(acc) >= 0.85 and abs(acc[0] - acc[1]) <= 0.1, acc
    for d in (one, two):
        assert json.loads((d / "classifier" / "DONE.json").read_text())["result"]["metrics"]["valid_accuracy"] >= 0.85


def test_cli_nproc_checks_batch_sizes_before_launching(capsys):
    assert main(["run", str(CONFIGS / "tiny.yaml"), "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert "classifier.bs=16 is the global batch and must be a multiple of the 3 processes" in err
    assert "launching" not in err
