"""Inference speed and agreement: stock fastai (`learn.predict`, `get_preds(dl=learn.dls.test_dl(texts))`)
against ulmfit_lab's predict (exact fp32, bf16 autocast, int8), on the same weights and the same texts,
next to the ceiling of the hardware (a plain 3-layer `nn.LSTM` stack of the paper's size).

Speed runs on the paper's classifier size (emb 400, 3 x 1152 LSTM, bptt 70, max_len 1400, head 50) with
random weights and the vocab of `--model` (a trained classifier) or one built from the texts. Accuracy
(exact vs reduced precision) needs trained weights: `--model` is evaluated on `--n-accuracy` IMDb test reviews.

Usage:
  python benchmarks/inference.py --data ../shared/data/imdb/aclImdb.tar.xz --n-docs 2000 --n-sentences 2000 \
      --model runs/quickstart --out benchmarks/results/inference_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quickstart import machine  # noqa: E402

from ulmfit_lab.config import DataConfig, ModelConfig  # noqa: E402
from ulmfit_lab.data.sources import read_source  # noqa: E402
from ulmfit_lab.models.artifact import read_artifact  # noqa: E402
from ulmfit_lab.models.awd_lstm import build_classifier  # noqa: E402
from ulmfit_lab.models.checkpoint import save_checkpoint  # noqa: E402
from ulmfit_lab.serving.fastai_compat import batch_dependent, stock_learner  # noqa: E402
from ulmfit_lab.serving.predict import Predictor  # noqa: E402
from ulmfit_lab.text.vocab import FastaiTokenizer, build_vocab, tokenize  # noqa: E402

PAPER = ModelConfig(emb_sz=400, n_hid=1152, n_layers=3, bptt=70)
MAX_LEN, HEAD = 1400, [50]


def load_imdb_test(path: str) -> pd.DataFrame:
    splits = read_source(path, DataConfig(unlabelled_folders=["unsup"]), Path(tempfile.gettempdir()) / "ulmfit_bench")
    if "test" not in splits:
        raise SystemExit(f"{path}: no test split (expected an aclImdb folder or archive)")
    return splits["test"]


def short_sentences(reviews: list[str], n: int, seed: int) -> list[str]:
    """One sentence of 4 to 30 words from each of `n` reviews."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(reviews)):
        sents = [s for s in re.split(r"(?<=[.!?])\s+", reviews[i].replace("<br />", " "))
                 if 4 <= len(s.split()) <= 30]
        if sents:
            out.append(sents[int(rng.integers(len(sents)))])
        if len(out) == n:
            break
    return out


def paper_model(folder: Path, vocab: list[str], labels: list, seed: int = 0) -> None:
    """A classifier folder of the paper's size with fastai's random init (speed does not depend on the weights)."""
    torch.manual_seed(seed)
    model = build_classifier(len(vocab), len(labels), PAPER, 0.5, HEAD, MAX_LEN)
    for m in model.modules():  # fresh BatchNorm statistics as if trained, so the head is not a constant
        if isinstance(m, nn.BatchNorm1d):
            m.running_var.fill_(0.01)
    save_checkpoint(model, folder, vocab, {"kind": "classifier", "model": PAPER.__dict__, "labels": labels,
                                           "lang": "en", "head": HEAD, "max_len": MAX_LEN, "drop_mult": 0.5})


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (tokenizer workers, fastai's loader workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed(fn, *args):
    """(result, wall seconds, CPU seconds). On a machine shared with other jobs the wall time grows with their
    load; the CPU time much less, so it tells how the paths compare there (in CPU-seconds per text)."""
    c, t = cpu_seconds(), time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t, cpu_seconds() - c


def _int8(module: nn.Module) -> nn.Module:
    """Dynamic int8 quantization as `serving.inference.prepare` does it. `quantize_dynamic` swaps the *children*
    of the module it is given, never the module itself: `quantize_dynamic(nn.LSTM(...))` returns the fp32 LSTM
    unchanged (the cause of an int8 "ceiling" at fp32 speed in earlier runs), so wrap it first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks eager dynamic quantization deprecated
        q = torch.ao.quantization.quantize_dynamic(nn.ModuleList([module]), {nn.LSTM, nn.Linear}, dtype=torch.qint8)[0]
    if type(q) is type(module):
        raise RuntimeError(f"int8 quantization left {type(module).__name__} in float: the ceiling would not be int8")
    return q


def _best(fn, reps: int) -> tuple[float, float]:
    fn()  # warm-up
    times = [timed(fn)[1:] for _ in range(reps)]
    return min(t[0] for t in times), min(t[1] for t in times)


def ceiling(device: torch.device, precisions: list[str], bs: int = 64, sl: int = 300, reps: int = 3) -> dict:
    """Tokens/s of a bare 3-layer nn.LSTM stack of the paper's size (no embedding, head or tokenization), and
    on CPU the int8 matmul roofline at the LSTM's recurrent shape (bs x n_hid -> 4 n_hid): the most any
    int8 LSTM can reach on this CPU, whatever the batching."""
    sizes = [(PAPER.emb_sz, PAPER.n_hid), (PAPER.n_hid, PAPER.n_hid), (PAPER.n_hid, PAPER.emb_sz)]
    lstms = [nn.LSTM(i, h, batch_first=True).to(device).eval() for i, h in sizes]
    x = torch.randn(bs, sl, PAPER.emb_sz, device=device)
    out: dict = {"batch": [bs, sl]}
    kinds = {"fp32": (lstms, None)}
    if "bf16" in precisions:
        kinds["bf16"] = (lstms, torch.bfloat16)
    if device.type == "cuda":
        kinds["fp16"] = (lstms, torch.float16)
    elif "int8" in precisions:
        kinds["int8"] = ([_int8(m) for m in lstms], None)
    gflop = 2 * 4 * sum(h * (i + h) for i, h in sizes) / 1e9  # per token: 4 gates x (input + hidden) matmuls
    for name, (stack, dtype) in kinds.items():
        def run(stack=stack, dtype=dtype):
            amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with torch.inference_mode(), amp:
                h = x
                for m in stack:
                    h, _ = m(h)
            if device.type == "cuda":
                torch.cuda.synchronize()
        best, cpu = _best(run, reps)
        out[name] = {"tokens_per_s": round(bs * sl / best, 1), "seconds": round(best, 3),
                     "tokens_per_cpu_s": round(bs * sl / cpu, 1), "gop_per_s": round(bs * sl * gflop / best, 1)}
    out["gflop_per_token"] = round(gflop, 4)
    out["fp32_gflop_per_s"] = out["fp32"]["gop_per_s"]
    if "int8" in kinds:
        out["int8"]["engine"] = torch.backends.quantized.engine
        out["int8_engines"] = int8_engines(lstms, x, reps)
        out["matmul"] = matmul_roofline(bs, PAPER.n_hid, 4 * PAPER.n_hid, gflop, reps)
    return out


def int8_engines(lstms: list[nn.LSTM], x: torch.Tensor, reps: int) -> dict:
    """The int8 stack's tokens/s under the default quantized engine (x86: fbgemm) and oneDNN's (qnnpack, for
    ARM, is left out: about 4x slower than fbgemm on an AVX2 EPYC)."""
    out, default = {}, torch.backends.quantized.engine
    engines = [e for e in dict.fromkeys([default, "onednn"]) if e in torch.backends.quantized.supported_engines]
    try:
        for engine in engines:
            torch.backends.quantized.engine = engine
            stack = [_int8(m) for m in lstms]

            def run(stack=stack):
                with torch.inference_mode():
                    h = x
                    for m in stack:
                        h, _ = m(h)
            out[engine] = round(x.shape[0] * x.shape[1] / _best(run, reps)[0], 1)
    finally:
        torch.backends.quantized.engine = default
    return out


def matmul_roofline(m: int, k: int, n: int, gflop_per_token: float, reps: int) -> dict:
    """GOP/s of one (m, k) x (k, n) product in dynamic int8 (`quantized::linear_dynamic`, the kernel inside the
    int8 LSTM; fp32 `nn.Linear` beside it), and the tokens/s that rate allows the paper's LSTM stack: no
    batching or engine setting can take the int8 LSTM past it on this CPU."""
    lin = nn.Linear(k, n).eval()
    q = _int8(lin)
    a = torch.randn(m, k)
    out = {"shape": [m, k, n]}
    for name, f in (("fp32", lin), ("int8", q)):
        def run(f=f):
            with torch.inference_mode():
                for _ in range(20):
                    f(a)
        out[f"{name}_gop_per_s"] = round(20 * 2 * m * k * n / _best(run, reps)[0] / 1e9, 1)
    # the int8 LSTM does gflop_per_token of such products per token: its tokens/s cannot pass this bound
    out["int8_bound_tokens_per_s"] = round(out["int8_gop_per_s"] / gflop_per_token, 1)
    return out


def measure(fn, texts: list[str], n_tokens: int) -> tuple[np.ndarray, dict]:
    fn(texts[:4])  # warm-up: one-time kernel set-up is not what a long run pays per text
    proba, secs, cpu = timed(fn, texts)
    return proba, {"n": len(texts), "seconds": round(secs, 2), "docs_per_s": round(len(texts) / secs, 2),
                   "tokens_per_s": round(n_tokens / secs, 1), "cpu_seconds": round(cpu, 2),
                   "tokens_per_cpu_s": round(n_tokens / cpu, 1)}


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a - b).max(1)
    return {"max_abs_diff": float(d.max()), "n_over_1e-4": int((d > 1e-4).sum()),
            "argmax_agree": float((a.argmax(1) == b.argmax(1)).mean())}


def run_set(kind: str, texts: list[str], folder: Path, learn, args, device: torch.device, ceil: dict) -> dict:
    tok_lens = [len(t) for t in FastaiTokenizer("en")(texts)]
    n_tok = int(sum(tok_lens))
    res: dict = {"n": len(texts), "tokens": n_tok, "mean_tokens": round(n_tok / len(texts), 1), "paths": {}}
    paths = res["paths"]

    def fastai_get_preds(ts):
        with learn.no_bar():
            return learn.get_preds(dl=learn.dls.test_dl(ts))[0].numpy()

    def fastai_predict(ts):
        with learn.no_bar():
            return np.stack([learn.predict(t)[2].numpy() for t in ts])

    gp, paths["fastai_get_preds"] = measure(fastai_get_preds, texts, n_tok)
    sub = texts[:args.n_predict]
    lp, paths["fastai_predict"] = measure(fastai_predict, sub, int(sum(tok_lens[:len(sub)])))
    preds = {}
    for precision in ["fp32", *args.precisions]:
        p = Predictor.load(folder, device=device, precision=precision)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preds[precision], paths[f"ulmfit_lab_{precision}"] = measure(p.predict_proba, texts, n_tok)
    base = paths["fastai_get_preds"]["docs_per_s"]
    for name, r in paths.items():
        r["speedup_vs_get_preds"] = round(r["docs_per_s"] / base, 2)
        r["speedup_vs_predict"] = round(r["docs_per_s"] / paths["fastai_predict"]["docs_per_s"], 1)
        prec = name.rsplit("_", 1)[-1] if name.startswith("ulmfit_lab") else "fp32"
        if prec in ceil:
            r["fraction_of_ceiling"] = round(r["tokens_per_s"] / ceil[prec]["tokens_per_s"], 3)
        r["fraction_of_fp32_ceiling"] = round(r["tokens_per_s"] / ceil["fp32"]["tokens_per_s"], 3)
        gp_cpu = paths["fastai_get_preds"]
        r["speedup_vs_get_preds_cpu_time"] = round((gp_cpu["cpu_seconds"] / gp_cpu["n"]) / (r["cpu_seconds"] / r["n"]),
                                                   2)
    # the most each precision could gain over get_preds here: its bare LSTM stack against get_preds
    res["ceiling_over_get_preds"] = {k: round(v["tokens_per_s"] / paths["fastai_get_preds"]["tokens_per_s"], 2)
                                     for k, v in ceil.items() if isinstance(v, dict) and "tokens_per_s" in v}
    if "matmul" in ceil:
        res["ceiling_over_get_preds"]["int8_matmul_bound"] = round(
            ceil["matmul"]["int8_bound_tokens_per_s"] / paths["fastai_get_preds"]["tokens_per_s"], 2)
    dep = batch_dependent(tok_lens, learn.dls.valid.bs, PAPER.bptt, MAX_LEN)
    exact = preds["fp32"]
    res["agreement"] = {
        "ulmfit_lab_fp32_vs_fastai_predict": agreement(exact[:len(sub)], lp),
        "ulmfit_lab_fp32_vs_fastai_get_preds": agreement(exact, gp),
        "ulmfit_lab_fp32_vs_fastai_get_preds_batch_independent_docs": agreement(exact[~dep], gp[~dep]),
        "fastai_get_preds_vs_fastai_predict": agreement(gp[:len(sub)], lp),
        "fastai_batch_dependent_docs": int(dep.sum()),
        "fastai_batch_size": int(learn.dls.valid.bs),
        **{f"ulmfit_lab_{p}_vs_fp32": agreement(preds[p], exact) for p in args.precisions},
    }
    return res


def accuracy(args, device: torch.device, test: pd.DataFrame) -> dict:
    """Test accuracy of the trained `--model`, exact vs reduced precision, on the same reviews.

    The reviews are tokenized once; each precision then runs on the same token ids.
    """
    meta, _ = read_artifact(args.model)
    df = test.sample(n=min(args.n_accuracy, len(test)), random_state=1) if args.n_accuracy else test
    y = df["label"].to_numpy()
    out = {"model": str(args.model), "model_config": meta["model"], "test_reviews": "aclImdb test split, "
           + (f"a random sample (pandas seed 1) of {len(df)}" if len(df) < len(test) else f"all {len(df)}"),
           "n": len(df), "accuracy": {}, "seconds": {}}
    ids = None
    probas = {}
    for precision in ["fp32", *args.precisions]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = Predictor.load(args.model, device=device, precision=precision)
            if ids is None:
                ids = next(p.iter_ids([df["text"].tolist()]))
            t = time.perf_counter()
            probas[precision] = p.proba_of_ids(ids)
            out["seconds"][precision] = round(time.perf_counter() - t, 1)
        pred = np.array(p.labels)[probas[precision].argmax(1)]
        out["accuracy"][precision] = round(float((pred == y).mean()), 5)
    out["delta_points_vs_fp32"] = {k: round(100 * (v - out["accuracy"]["fp32"]), 3)
                                   for k, v in out["accuracy"].items() if k != "fp32"}
    out["vs_fp32"] = {k: agreement(v, probas["fp32"]) for k, v in probas.items() if k != "fp32"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="aclImdb folder or .tar.gz/.tar.xz")
    ap.add_argument("--n-docs", type=int, default=2000, help="IMDb test reviews for the speed runs")
    ap.add_argument("--n-sentences", type=int, default=2000, help="short sentences for the speed runs")
    ap.add_argument("--n-predict", type=int, default=100, help="texts for fastai's (slow) learn.predict loop")
    ap.add_argument("--model", help="a trained classifier (folder or run dir): its vocab for speed, and the "
                    "accuracy of each precision")
    ap.add_argument("--n-accuracy", type=int, default=25000, help="test reviews for accuracy (0: all)")
    ap.add_argument("--precisions", nargs="*", default=["bf16", "int8"], help="reduced-precision paths to run")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", choices=["all", "speed", "accuracy"], default="all",
                    help="speed: ceiling + timed paths; accuracy: the trained --model per precision (not timed: "
                    "may run on a busy machine). A part updates its keys in an existing --out file")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference_cpu.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        args.precisions = [p for p in args.precisions if p != "int8"] or ["bf16"]
    t0 = time.time()
    test = load_imdb_test(args.data)
    rng = np.random.default_rng(args.seed)
    docs = test["text"].iloc[rng.permutation(len(test))[:args.n_docs]].tolist()
    sentences = short_sentences(test["text"].tolist(), args.n_sentences, args.seed)
    if args.model:
        _, vocab = read_artifact(args.model)
    else:
        vocab = build_vocab([tokenize(docs, desc="Vocab")])
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if args.part != "all" and out_path.is_file() else {}
    result.update({"benchmark": "inference", "device": str(device),
                   "machine": {**machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                               "quantized_engine": torch.backends.quantized.engine}})
    result.setdefault("commands", {})[args.part] = " ".join(sys.argv)
    if args.part in ("all", "speed"):
        result["model"] = {"config": PAPER.__dict__, "max_len": MAX_LEN, "head": HEAD, "vocab_size": len(vocab),
                           "weights": "random (fastai init)"}
        print(f"ceiling ({device}) ...", file=sys.stderr)
        result["ceiling"] = ceil = ceiling(device, args.precisions)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "paper"
            paper_model(folder, vocab, ["neg", "pos"], args.seed)
            learn = stock_learner(folder)
            if device.type == "cuda":
                learn.dls.to(device)
                learn.model.to(device)
            for kind, texts in (("imdb_reviews", docs), ("short_sentences", sentences)):
                if texts:
                    print(f"{kind}: {len(texts)} texts ...", file=sys.stderr)
                    result[kind] = run_set(kind, texts, folder, learn, args, device, ceil)
        result["speed_wall_seconds"] = round(time.time() - t0, 1)
    if args.model and args.part in ("all", "accuracy"):
        print("accuracy ...", file=sys.stderr)
        result["accuracy"] = accuracy(args, device, test)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=str))
    summary(result)
    print(f"-> {args.out}", file=sys.stderr)


def summary(r: dict) -> None:
    if "ceiling" in r:
        c = r["ceiling"]
        print("ceiling: " + ", ".join(f"{k} {v['tokens_per_s']:,.0f} tok/s" for k, v in c.items()
                                      if isinstance(v, dict) and "tokens_per_s" in v))
        if "matmul" in c:
            print("int8 engines (tok/s):", c["int8_engines"], " matmul roofline:", c["matmul"])
    for kind in ("imdb_reviews", "short_sentences"):
        if kind not in r:
            continue
        print(f"{kind} (n={r[kind]['n']}, {r[kind]['mean_tokens']} tokens/text):")
        for name, p in r[kind]["paths"].items():
            print(f"  {name:22s} {p['docs_per_s']:9.2f} docs/s {p['tokens_per_s']:10,.0f} tok/s  "
                  f"x{p['speedup_vs_get_preds']:5.2f} get_preds  x{p['speedup_vs_predict']:6.1f} predict  "
                  f"{100 * p.get('fraction_of_ceiling', p['fraction_of_fp32_ceiling']):5.1f}% of ceiling")
        print("  agreement:", json.dumps(r[kind]["agreement"]))
    if "accuracy" in r:
        print("accuracy:", r["accuracy"]["accuracy"], "delta points:", r["accuracy"]["delta_points_vs_fp32"])


if __name__ == "__main__":
    main()
