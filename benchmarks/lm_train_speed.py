"""LM pretraining speed on this machine: stock fastai, today's trainer and the sampled-softmax trainer, side by side.

Part `candidates`: seconds per step (forward, loss, backward, optimizer) of the ideas for a faster trainer, on
random ids at the config's sizes: fastai's plain loss, the fused chunked softmax (`run.fused_softmax`),
sampled softmax at several draw counts, larger batches.

Part `train` (what the speed-up is judged on): the same token ids (an `lm` stage's `ids/` folder), the same
initial weights and the same `--tokens` training tokens for each trainer, then held-out perplexity (full
softmax, the same function for all) on the stage's held-out ids:
  stock     fastai's `language_model_learner` + `fit_one_cycle`, fp32 (fastai has no CPU autocast)
  today     this package's trainer as the campaign ran it: STLR, fused decoder + softmax
  sampled   today's with `lm_pretrain.softmax_samples=N` (one row per `--samples` value)

Usage (the ids of `ulmfit-lab lm configs/pretrain_reviews.yaml`, e.g. RUN/lm/ids):
  python benchmarks/lm_train_speed.py --ids runs/campaign/leg2/lm/ids --tokens 600000 \
      --out benchmarks/results/lm_train_cpu.json [--samples 1024,2048] [--part candidates,train] [--init LM]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.metrics import Perplexity, accuracy
from fastai.text.all import AWD_LSTM, LMDataLoader, LMTensorText, awd_lstm_lm_config, language_model_learner
from fastai.torch_core import set_seed

from ulmfit_lab import load_config
from ulmfit_lab.device import cpu_has_bf16
from ulmfit_lab.logs import show_progress
from ulmfit_lab.models.awd_lstm import _arch, build_lm, lm_layer_groups
from ulmfit_lab.models.checkpoint import adapt_pretrained, read_lm_folder
from ulmfit_lab.stages.lm import lm_perplexity
from ulmfit_lab.text.corpus import DocIds
from ulmfit_lab.training.fused import fuse_lm_loss, sample_lm_loss
from ulmfit_lab.training.learner import fit_phases, make_learner
from ulmfit_lab.training.loaders import lm_loaders
from ulmfit_lab.training.rundir import StageDir
from ulmfit_lab.training.schedules import Phase

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, machine  # noqa: E402

CPU = torch.device("cpu")


def read_ids(folder: Path) -> tuple[DocIds, DocIds, int]:
    """(train, held-out, vocab size) from an `lm` stage's ids folder (the held-out sets chained)."""
    def load(p: Path) -> DocIds:
        return DocIds.from_dataset(datasets.Dataset.from_file(str(p)))

    train = load(folder / "train.arrow")
    held = [load(p) for p in sorted(folder.glob("held-out-*.arrow"))]
    if not held:
        raise SystemExit(f"{folder}: no held-out-*.arrow (expected the ids/ folder of an `lm` stage)")
    valid = held[0]
    for h in held[1:]:
        valid = valid + h
    top = int(np.flatnonzero(train.token_counts(1 << 20))[-1])  # the highest id in use
    return train, valid, (top // 8 + 1) * 8  # fastai pads the vocab to a multiple of 8


def subset(docs: DocIds, n_tokens: int, seed: int) -> list[np.ndarray]:
    """Whole documents, in a fixed random order, until `n_tokens`: the same text for every trainer."""
    order, out, n = np.random.default_rng(seed).permutation(len(docs)), [], 0
    for i in order:
        d = np.asarray(docs[int(i)])
        out.append(d)
        n += len(d)
        if n >= n_tokens:
            break
    return out


def step_seconds(cfg, n_vocab: int, loss_kind: str, bs: int, draws: int = 0, steps: int = 5,
                 bf16: bool = False) -> dict:
    """Mean seconds per optimizer step on random ids, split into forward / loss / backward / optimizer.

    `bf16`: forward and loss under CPU bf16 autocast, as `run.precision=bf16` trains on a CPU that has it.
    """
    m, lp = cfg.model, cfg.lm_pretrain
    set_seed(0)
    model = build_lm(n_vocab, m, lp.drop_mult)
    if loss_kind == "plain":
        loss = torch.nn.CrossEntropyLoss()
    elif loss_kind == "fused":
        loss = fuse_lm_loss(model)
    else:
        loss = sample_lm_loss(model, 1.0 / np.arange(1, n_vocab + 1), draws)  # Zipf, as a frequency-sorted vocab
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randint(0, n_vocab, (bs, m.bptt)), torch.randint(0, n_vocab, (bs, m.bptt))
    model.train()
    model.reset()
    times = []
    for i in range(steps + 2):
        t = [time.perf_counter()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)[0]
            t.append(time.perf_counter())
            value = loss(out.reshape(-1, out.shape[-1]), y.reshape(-1)) if loss_kind == "plain" else loss(out, y)
        t.append(time.perf_counter())
        value.backward()
        t.append(time.perf_counter())
        opt.step()
        opt.zero_grad()
        t.append(time.perf_counter())
        if i >= 2:  # 2 warm-up steps
            times.append(np.diff(t))
    fwd, lo, bwd, op = np.mean(times, 0)
    total = fwd + lo + bwd + op
    return {"loss": loss_kind, "bs": bs, "draws": draws or None, "precision": "bf16" if bf16 else "fp32",
            "forward_s": round(fwd, 4), "loss_s": round(lo, 4),
            "backward_s": round(bwd, 4), "optimizer_s": round(op, 4), "step_s": round(total, 4),
            "tokens_per_s": round(bs * m.bptt / total, 1)}


def train_stock(cfg, n_vocab: int, train: list, valid: DocIds) -> tuple[float, object]:
    """fastai's own recipe: `language_model_learner` (no pretrained weights) + `fit_one_cycle(1, lr)`."""
    m, lp = cfg.model, cfg.lm_pretrain
    dls = DataLoaders(LMDataLoader([LMTensorText(torch.as_tensor(d, dtype=torch.long)) for d in train],
                                   lens=[len(d) for d in train], bs=lp.bs, seq_len=m.bptt, shuffle=True,
                                   drop_last=True),
                      LMDataLoader([LMTensorText(torch.as_tensor(valid[0], dtype=torch.long))], bs=lp.bs,
                                   seq_len=m.bptt), device=CPU)
    dls.vocab = [f"w{i}" for i in range(n_vocab)]
    set_seed(0)
    learn = language_model_learner(dls, AWD_LSTM, config=_arch(m, awd_lstm_lm_config), drop_mult=lp.drop_mult,
                                   pretrained=False, metrics=[accuracy, Perplexity()], wd=lp.wd)
    _same_init(learn.model, cfg, n_vocab)
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
    learn.logger = lambda *_: None
    t0 = time.perf_counter()
    learn.fit_one_cycle(1, lp.lr)
    return time.perf_counter() - t0, learn


INIT: dict | None = None  # --init: weights every trainer starts from (else the same random init)


def _same_init(model, cfg, n_vocab: int) -> None:
    set_seed(0)
    if INIT:
        adapt_pretrained(INIT["wgts"], INIT["vocab"], INIT["vocab"], model)
    else:
        model.load_state_dict(build_lm(n_vocab, cfg.model, cfg.lm_pretrain.drop_mult).state_dict())


def train_ours(cfg, n_vocab: int, train: list, valid: DocIds, draws: int, precision: str) -> tuple[float, object]:
    """This package's LM trainer as the `lm` stage runs it (STLR, discriminative LRs, AR/TAR, clipping)."""
    m, lp = cfg.model, dataclasses.replace(cfg.lm_pretrain, softmax_samples=draws)
    run = dataclasses.replace(cfg.run, precision=precision, progress=False)
    dls = lm_loaders(train, valid[:1], lp.bs, m.bptt, m.backwards, CPU, cfg.run.seed)
    set_seed(0)
    model = build_lm(n_vocab, m, lp.drop_mult)
    _same_init(model, cfg, n_vocab)
    counts = np.bincount(np.concatenate(train), minlength=n_vocab) if draws else None
    with tempfile.TemporaryDirectory() as tmp:
        learn = make_learner(dls, model, lm_layer_groups, lp, run, CPU, [], Path(tmp), lm=True, lm_counts=counts)
        t0 = time.perf_counter()
        fit_phases(learn, [Phase(len(learn.opt.param_lists), 1)], lp, StageDir(Path(tmp), "bench"))
        return time.perf_counter() - t0, learn


def main() -> None:
    show_progress()  # the library's [ulmfit-lab] progress lines, as the command line prints them
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", required=True, help="an `lm` stage's ids/ folder (train.arrow, held-out-*.arrow)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "pretrain_reviews.yaml"))
    ap.add_argument("--tokens", type=int, default=600_000, help="training tokens per trainer (part train)")
    ap.add_argument("--valid-tokens", type=int, default=150_000, help="held-out tokens for perplexity")
    ap.add_argument("--samples", default="1024,2048", help="sampled-softmax draws to compare")
    ap.add_argument("--init", help="an LM folder every trainer starts from, with the ids' vocab (e.g. the "
                    "campaign's previous pass); default: the same random weights")
    ap.add_argument("--part", default="candidates,train")
    ap.add_argument("--bf16", action="store_true", help="candidates: also the sampled softmax in bf16 at 1, 2, 4 "
                    "times the batch (on a CPU with native bf16)")
    ap.add_argument("--trainers", default="stock,today,sampled")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lm_train_cpu.json"))
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. lm_pretrain.bs=32")
    args = ap.parse_args()
    cfg = load_config(args.config, list(args.overrides))
    draws = [int(s) for s in args.samples.split(",") if s]
    parts, trainers = set(args.part.split(",")), args.trainers.split(",")
    train_ids, valid_ids, n_vocab = read_ids(Path(args.ids))
    if args.init:
        global INIT
        wgts, vocab = read_lm_folder(Path(args.init), cfg.model.backwards)
        INIT = {"wgts": wgts, "vocab": vocab}
        if not n_vocab - 8 < len(vocab) <= n_vocab + 8:  # (padded to a multiple of 8 with unused words)
            raise SystemExit(f"--init {args.init}: vocab of {len(vocab)} words, the ids use {n_vocab}; give the "
                             "LM whose vocab wrote these ids")
        n_vocab = len(vocab)
    precision = "bf16" if cpu_has_bf16() else "fp32"  # what `run.precision=bf16` trains in on this CPU
    if args.bf16 and precision != "bf16":
        raise SystemExit("--bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), and oneDNN has no bf16 LSTM "
                         "without it; leave --bf16 out here")
    out: dict = {"benchmark": "lm_train_speed", "machine": machine(), "cpu_bf16": cpu_has_bf16(),
                 "precision_ours": precision, "precision_stock": "fp32", "ids": args.ids, "init": args.init,
                 "config": args.config, "overrides": args.overrides, "vocab": n_vocab,
                 "model": dataclasses.asdict(cfg.model), "lm_pretrain": dataclasses.asdict(cfg.lm_pretrain)}
    if "candidates" in parts:
        bs = cfg.lm_pretrain.bs
        rows = [step_seconds(cfg, n_vocab, "plain", bs), step_seconds(cfg, n_vocab, "fused", bs)]
        rows += [step_seconds(cfg, n_vocab, "sampled", bs, d) for d in (1024, 2048, 4096)]
        rows += [step_seconds(cfg, n_vocab, "fused", b) for b in (2 * bs, 4 * bs)]
        rows += [step_seconds(cfg, n_vocab, "sampled", 2 * bs, 2048)]
        if args.bf16:  # the campaign's loss (sampled, 1,024 draws) at 1, 2 and 4 times the batch, in bf16
            rows += [step_seconds(cfg, n_vocab, "sampled", b, 1024, bf16=True) for b in (bs, 2 * bs, 4 * bs)]
        base = rows[1]["tokens_per_s"]
        for r in rows:
            r["vs_fused"] = round(r["tokens_per_s"] / base, 3)
            print(json.dumps(r), flush=True)
        out["candidates"] = rows
    if "train" in parts:
        train = subset(train_ids, args.tokens, cfg.run.seed)
        valid = subset(valid_ids, args.valid_tokens, cfg.run.seed + 1)
        n_train = int(sum(len(d) for d in train))
        out["train"] = {"train_tokens": n_train, "valid_tokens": int(sum(len(d) for d in valid)), "rows": []}
        runs = []
        if "stock" in trainers:
            runs.append(("stock fastai (language_model_learner + fit_one_cycle, fp32)", None,
                         lambda: train_stock(cfg, n_vocab, train, valid_ids)))
        if "today" in trainers:
            runs.append(("today (STLR, fused softmax)", 0, lambda: train_ours(cfg, n_vocab, train, valid_ids, 0,
                                                                          precision)))
        if "sampled" in trainers:
            for d in draws:
                runs.append((f"sampled softmax, {d} draws", d,
                             lambda d=d: train_ours(cfg, n_vocab, train, valid_ids, d, precision)))
        for name, d, fn in runs:
            seconds, learn = fn()
            ppl = lm_perplexity(learn.model, valid, cfg.lm_pretrain.bs, cfg.model.bptt, cfg.model.backwards,
                                learn.dls.device)
            row = {"trainer": name, "softmax_samples": d, "seconds": round(seconds, 1),
                   "tokens_per_s": round(n_train / seconds, 1), "held_out_perplexity": round(ppl, 2)}
            out["train"]["rows"].append(row)
            print(json.dumps(row), flush=True)
        rows = {r["trainer"].split(" ")[0]: r for r in out["train"]["rows"]}
        for r in out["train"]["rows"]:
            for ref in ("stock", "today"):
                if ref in rows:
                    r[f"speedup_vs_{ref}"] = round(r["tokens_per_s"] / rows[ref]["tokens_per_s"], 3)
                    r[f"perplexity_vs_{ref}"] = round(r["held_out_perplexity"] / rows[ref]["held_out_perplexity"], 4)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
