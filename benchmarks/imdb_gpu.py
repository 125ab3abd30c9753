"""ULMFiT on IMDb on one GPU (issue 6): WikiText-2 general LM, fwd + bwd, ensemble; and stock fastai's speed.

Two steps; each call does one piece of work and can be repeated until it says it is done:

  python benchmarks/imdb_gpu.py run --shared ../shared/data [--budget-min 9] [override ...]
      `ulmfit-lab run configs/imdb.yaml model.directions=[fwd,bwd]` with `run.stop_after_minutes`:
      the run pauses after a checkpoint (exit code 3: call again) and resumes exactly where it stopped.
      When it finishes, writes JSON per stage: device, epochs, epoch seconds, tokens/s, perplexities,
      test accuracy per direction and ensembled.
  python benchmarks/imdb_gpu.py stock --shared ../shared/data [--batches 300] [override ...]
      stock fastai (`language_model_learner` / `text_classifier_learner`, `to_fp16`, `fit_one_cycle`) and
      ulmfit_lab's learners on the same token ids (the `run` step's data stage), model size, bs and bptt:
      training tokens/s of each over --batches batches (the first 20 not timed), and their ratio.

Results go to --out (default benchmarks/results/imdb_gpu.json), merged with what earlier calls wrote.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, machine  # noqa: E402

WARMUP = 20


def _overrides(args: argparse.Namespace) -> list[str]:
    shared = Path(args.shared)
    return [f"data.path={shared / 'imdb' / 'aclImdb.tar.xz'}", "data.max_test=null",
            f"lm_pretrain.corpus=[{shared / 'wikitext-2' / 'fastai_wikitext_tiny' / 'train.csv.xz'}]",
            f"lm_pretrain.eval_corpus=[{shared / 'wikitext-2' / 'wiki.valid.tokens'}]",
            "model.directions=[fwd,bwd]", f"run.dir={args.run_dir}", "run.progress=false", *args.overrides]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def step_run(args: argparse.Namespace, out: dict) -> int:
    cmd = [sys.executable, "-m", "ulmfit_lab.cli", "run", str(ROOT / "configs" / "imdb.yaml"), *_overrides(args),
           f"run.stop_after_minutes={args.budget_min}"]
    t0 = time.time()
    rc = subprocess.call(cmd)
    out.setdefault("run_calls", []).append({"seconds": round(time.time() - t0, 1), "exit_code": rc})
    run_dir = Path(args.run_dir)
    stages = {}
    for d in sorted(p for p in run_dir.iterdir() if p.is_dir()) if run_dir.is_dir() else []:
        done = json.loads((d / "DONE.json").read_text())["result"] if (d / "DONE.json").is_file() else None
        rows = _rows(d / "metrics.jsonl")
        stages[d.name] = {"done": done is not None, "metrics": (done or {}).get("metrics"),
                          "epochs": [{k: r.get(k) for k in ("phase", "epoch", "train_loss", "valid_loss", "accuracy",
                                                             "perplexity", "seconds", "train_tokens_per_s")}
                                     for r in rows]}
    out["ulmfit"] = stages
    if rc == 3:
        print("paused at the time budget: call the same command again to go on")
    elif rc == 0:
        ev = stages.get("evaluate", {}).get("metrics") or {}
        print(f"done: test accuracy {ev.get('accuracy')} (per direction {ev.get('per_direction')})")
    return rc


class _Timer:
    """fastai callback: training tokens/s over batches `warmup`..n, then stops the fit."""

    def __new__(cls, n: int, warmup: int = WARMUP):
        from fastai.callback.core import Callback, CancelFitException

        class Timer(Callback):
            order = 99

            def before_fit(self):
                self.i, self.tokens, self.t0, self.seconds = 0, 0, None, 0.0

            def after_batch(self):
                if not self.training:
                    return
                self.i += 1
                if self.i >= warmup:  # time from the end of warm-up batch `warmup` to the last batch's end
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    now = time.time()
                    if self.t0 is None:
                        self.t0 = now
                    else:
                        self.tokens += int((self.xb[0] != 1).sum())
                        self.seconds = now - self.t0
                if self.i >= n:
                    raise CancelFitException()

        return Timer()


def step_stock(args: argparse.Namespace, out: dict) -> int:
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import Perplexity, accuracy
    from fastai.text.all import AWD_LSTM, language_model_learner, text_classifier_learner
    from fastcore.foundation import L

    from ulmfit_lab import load_config
    from ulmfit_lab.models.awd_lstm import build_classifier, build_lm, classifier_layer_groups, lm_layer_groups
    from ulmfit_lab.stages.common import Context
    from ulmfit_lab.stages.data import DataResult, ids_of
    from ulmfit_lab.training.learner import make_learner
    from ulmfit_lab.training.loaders import classifier_loaders, lm_loaders

    cfg = load_config(ROOT / "configs" / "imdb.yaml", _overrides(args))
    done = Path(args.run_dir) / "data" / "DONE.json"
    if not done.is_file():
        raise SystemExit("run the `run` step first (its data stage gives the token ids both sides train on)")
    data = DataResult.from_dict(json.loads(done.read_text())["result"])
    ctx, m = Context.create(cfg), cfg.model
    vocab = data.vocab()
    tr, va = data.split("train"), data.split("valid")
    lm_ids = data.ids("train", "unlabelled")  # memory-mapped; the unlabelled split only where there is one
    arch = {"emb_sz": m.emb_sz, "n_hid": m.n_hid, "n_layers": m.n_layers}
    res = {}
    for kind in ("lm", "classifier"):
        tc = cfg.lm_finetune if kind == "lm" else cfg.classifier
        for side in ("stock_fastai", "ulmfit_lab"):
            torch.manual_seed(0)
            if kind == "lm":
                dls = lm_loaders(lm_ids, ids_of(va), tc.bs, m.bptt, False, ctx.device, 0)
                dls.vocab = vocab  # what fastai's learner factories read the vocab size from
                if side == "stock_fastai":
                    from fastai.text.models.awdlstm import awd_lstm_lm_config

                    learn = language_model_learner(dls, AWD_LSTM, config=dict(awd_lstm_lm_config, **arch),
                                                   pretrained=False, drop_mult=tc.drop_mult,
                                                   metrics=[accuracy, Perplexity()])
                else:
                    learn = make_learner(dls, build_lm(len(vocab), m, tc.drop_mult), lm_layer_groups, tc, cfg.run,
                                         ctx.device, [accuracy, Perplexity()], Path(args.run_dir), lm=True)
            else:
                dls = classifier_loaders(ids_of(tr), tr["label"], ids_of(va), va["label"], tc.bs, m.bptt, False,
                                         ctx.device, 0)
                dls.vocab = L([vocab, data.classes])  # fastai reads L: (text vocab, classes)
                if side == "stock_fastai":
                    from fastai.text.models.awdlstm import awd_lstm_clas_config

                    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=m.bptt, pretrained=False,
                                                    config=dict(awd_lstm_clas_config, **arch), n_out=len(data.classes),
                                                    drop_mult=tc.drop_mult, max_len=cfg.classifier.max_len,
                                                    lin_ftrs=list(cfg.classifier.head), metrics=[accuracy],
                                                    loss_func=CrossEntropyLossFlat())
                else:
                    model = build_classifier(len(vocab), len(data.classes), m, tc.drop_mult, cfg.classifier.head,
                                             cfg.classifier.max_len)
                    learn = make_learner(dls, model, classifier_layer_groups, tc, cfg.run, ctx.device, [accuracy],
                                         Path(args.run_dir))
            if side == "stock_fastai" and ctx.device.type == "cuda":
                learn = learn.to_fp16()
            if side == "stock_fastai":
                learn.model.to(ctx.device)
            timer = _Timer(args.batches, args.warmup)
            if side == "stock_fastai":
                learn.fit_one_cycle(1, tc.lr, cbs=[timer])
            else:
                learn.fit(1, tc.lr, cbs=[timer])
            if not timer.seconds:
                raise SystemExit(f"{kind}: fewer than {args.warmup + 2} training batches; use more data")
            res.setdefault(kind, {})[side] = {"tokens_per_s": round(timer.tokens / timer.seconds, 1),
                                              "batches_timed": timer.i - args.warmup, "bs": tc.bs, "bptt": m.bptt}
            print(f"[stock] {kind} {side}: {res[kind][side]['tokens_per_s']:.0f} tokens/s", flush=True)
        sides = res[kind]
        sides["speedup"] = round(sides["ulmfit_lab"]["tokens_per_s"] / sides["stock_fastai"]["tokens_per_s"], 3)
    out["throughput"] = res
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["run", "stock"])
    ap.add_argument("--shared", required=True, help="the shared data folder (../shared/data)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "imdb_gpu.json"))
    ap.add_argument("--run-dir", default="runs/imdb_gpu")
    ap.add_argument("--budget-min", type=float, default=9.0, help="run step: pause after this many minutes")
    ap.add_argument("--batches", type=int, default=300, help="stock step: batches run per learner, warm-up included")
    ap.add_argument("--warmup", type=int, default=WARMUP, help="stock step: batches run before timing starts")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for configs/imdb.yaml")
    args = ap.parse_intermixed_args()
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    out.update(benchmark="imdb_gpu", machine=machine(), overrides=args.overrides)
    rc = step_run(args, out) if args.step == "run" else step_stock(args, out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, default=str))
    return rc


if __name__ == "__main__":
    sys.exit(main())
