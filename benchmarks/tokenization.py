"""Tokenization at scale: stock fastai `tokenize_df` vs ulmfit_lab's `tokenize`, same documents, one run.

Each side runs in its own subprocess, so its time and memory are its own:
  fastai       reads the texts into a DataFrame (not timed), then times `tokenize_df(df, "text", n_workers)`
               (default rules, spaCy, `n_workers` processes: what `Tokenizer.from_df` runs) and `make_vocab`.
  ours         times `tokenize(FileTexts(paths))` into an empty cache (cold) + `build_vocab` + `write_ids`
               (the ids in the final vocab, on disk): texts are streamed from the files.
  ours (warm)  the same call again in a new process, the cache now filled.
Afterwards (not timed) each side digests every document's tokens and vocab ids; the digests and the
vocabs (min_freq 3, max_vocab 60000, fastai's `Numericalize`) must be identical.

Memory: a thread samples the side's whole process tree (itself and its workers) every 0.1 s. `peak_pss_mb`
(proportional set size: pages shared by forked workers counted once) is the fair total; `peak_rss_mb`
sums RSS (shared pages counted in every process), `peak_anon_mb` leaves out file pages (e.g. the
memory-mapped Arrow cache), `max_rss_single_mb` is the largest single process (sampled, and ru_maxrss of the
side's own process).

Usage:
  python benchmarks/tokenization.py --data ../shared/data [--max-docs N] [--workers 2] \\
      [--out benchmarks/results/tokenize_cpu.json]
`--data`: the shared data folder (uses imdb/aclImdb.tar.xz), an aclImdb folder or archive (train/{pos,neg,unsup}
and test/{pos,neg}), a folder of .txt files, or a table file (CSV/TSV/JSONL/parquet; --text-column).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# (not named tokenize.py: in this folder that would hide the standard library's `tokenize` from every script)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's ulmfit_lab, whatever is installed
IMDB_FOLDERS = ("train/pos", "train/neg", "train/unsup", "test/pos", "test/neg")
MIN_FREQ, MAX_VOCAB = 3, 60000


# ---------------------------------------------------------------- memory of a process tree


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _rollup(pid: int) -> dict[str, int]:
    vals = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss", "Pss_Anon"):
                    vals[k] = int(v.split()[0])
    except OSError:
        pass
    return vals


class MemorySampler:
    """Peak sums of Rss, Pss and Pss_Anon (MB) over this process and its descendants, sampled."""

    def __init__(self, every: float = 0.1):
        self.every, self.peak = every, {"Rss": 0, "Pss": 0, "Pss_Anon": 0}
        self.peak_single = 0  # the largest Rss of one process (ru_maxrss would also count a child's fork)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = {"Rss": 0, "Pss": 0, "Pss_Anon": 0}
            for p in _tree(os.getpid()):
                one = _rollup(p)
                for k, v in one.items():
                    total[k] += v
                self.peak_single = max(self.peak_single, one.get("Rss", 0))
            for k in total:
                self.peak[k] = max(self.peak[k], total[k])
            self._stop.wait(self.every)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        return {"peak_pss_mb": round(self.peak["Pss"] / 1024), "peak_rss_mb": round(self.peak["Rss"] / 1024),
                "peak_anon_mb": round(self.peak["Pss_Anon"] / 1024),
                "max_rss_single_mb": round(max(self.peak_single, _self_maxrss()) / 1024)}


def _self_maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---------------------------------------------------------------- documents


def find_docs(data: Path, cache: Path) -> dict:
    """{'paths': [...]} (one text per file) or {'table': path} for a table file."""
    if (data / "imdb" / "aclImdb.tar.xz").is_file():
        data = data / "imdb" / "aclImdb.tar.xz"
    if data.is_file() and ".tar" in data.name:
        from ulmfit_lab.data.sources import extracted_folder

        data = extracted_folder(data, cache)
    if data.is_file():
        return {"table": str(data)}
    if (data / "train").is_dir():
        folders = [data / f for f in IMDB_FOLDERS if (data / f).is_dir()]
    else:
        folders = [data]
    paths = [str(p) for f in folders for p in sorted(f.glob("*.txt"))]
    if not paths:
        raise SystemExit(f"{data}: no .txt files found")
    return {"paths": paths}


def read_texts(docs: dict, text_column: str) -> list[str]:
    if "paths" in docs:
        from ulmfit_lab.data.sources import read_text_file

        return [read_text_file(Path(p)) for p in docs["paths"]]
    from ulmfit_lab.data.sources import read_table

    return read_table(docs["table"])[text_column].tolist()


def machine() -> dict:
    from importlib.metadata import version

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            **{p: version(p) for p in ("fastai", "spacy", "datasets", "pyarrow")},
            "load_average_at_end": os.getloadavg()}


def digest(items) -> str:
    h = hashlib.sha1()
    for x in items:
        h.update(x.encode("utf-8", "surrogatepass") if isinstance(x, str) else x)
        h.update(b"\x00")
    return h.hexdigest()[:16]


def ids_digest(ids) -> str:
    import numpy as np

    return hashlib.sha1(np.asarray(ids, dtype="<i4").tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------- the sides (each in its own process)


def side_fastai(docs: dict, workers: int, text_column: str) -> dict:
    import pandas as pd
    from fastai.text.core import tokenize_df
    from fastai.text.data import Numericalize

    df = pd.DataFrame({"text": read_texts(docs, text_column)})
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        out, counter = tokenize_df(df, "text", n_workers=workers)
        seconds = time.perf_counter() - t0
        num = Numericalize(min_freq=MIN_FREQ, max_vocab=MAX_VOCAB)
        num.setups(type("Counted", (), {"counter": counter})())  # what TextBlock's setup does
        seconds_vocab = time.perf_counter() - t0
    toks = out["text"].tolist()
    return {"docs": len(toks), "tokens": int(sum(map(len, toks))), "seconds": seconds,
            "seconds_with_vocab": seconds_vocab, **mem.report(), "vocab": list(num.vocab),
            "token_digests": [digest(t) for t in toks],
            "id_digests": [ids_digest(num.encodes(t).numpy()) for t in toks]}


def side_ours(docs: dict, workers: int, text_column: str, cache: str, warm: bool) -> dict:
    from ulmfit_lab.text.corpus import FileTexts
    from ulmfit_lab.text.vocab import build_vocab, tokenize, write_ids

    texts = FileTexts(docs["paths"]) if "paths" in docs else read_texts(docs, text_column)
    out_dir = Path(tempfile.mkdtemp(prefix="tokbench-ids-"))
    try:
        with MemorySampler() as mem:
            t0 = time.perf_counter()
            tok = tokenize(texts, cache_dir=Path(cache), num_workers=workers, progress=False)
            seconds_tokenize = time.perf_counter() - t0
            vocab = build_vocab([tok], MIN_FREQ, MAX_VOCAB)
            ids = write_ids(tok, vocab, out_dir / "ids.arrow")
            seconds = time.perf_counter() - t0
        res = {"docs": len(tok), "tokens": tok.n_tokens, "seconds": seconds,
               "seconds_tokenize": seconds_tokenize, **mem.report(), "vocab": vocab}
        if not warm:
            from ulmfit_lab.text.corpus import DocIds

            itos = tok.itos
            res["token_digests"] = [digest(itos[i] for i in d.tolist()) for d in tok.docs()]
            res["id_digests"] = [ids_digest(d) for d in DocIds.from_dataset(ids)]
        return res
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def run_side(args: argparse.Namespace, side: str, spec: Path, cache: Path) -> dict:
    out = spec.with_name(f"{side}.json")
    cmd = [sys.executable, __file__, "--side", side, "--spec", str(spec), "--result", str(out),
           "--workers", str(args.workers), "--cache", str(cache), "--text-column", args.text_column]
    print(f"[tokenize bench] {side} ...", flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    res = json.loads(out.read_text())
    print(f"[tokenize bench] {side}: {res['seconds']:.1f} s, peak PSS {res['peak_pss_mb']} MB "
          f"(process {time.time() - t0:.0f} s)", flush=True)
    return res


def mismatches(a: list[str], b: list[str], docs: dict, n: int = 5) -> list:
    bad = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return [{"doc": i, "path": docs["paths"][i] if "paths" in docs else None} for i in bad[:n]] + (
        [{"more": len(bad) - n}] if len(bad) > n else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="shared data folder, aclImdb folder/archive, folder of .txt, or table file")
    ap.add_argument("--max-docs", type=int, default=None, help="a seeded random sample of this many documents")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes, for both sides")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tokenize_cpu.json"))
    ap.add_argument("--cache", help="where to extract an archive (default: a temporary folder)")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.side:  # a child: one side, results to --result
        docs = json.loads(Path(args.spec).read_text())
        if args.side == "fastai":
            res = side_fastai(docs, args.workers, args.text_column)
        else:
            res = side_ours(docs, args.workers, args.text_column, args.cache, warm=args.side == "ours_warm")
        Path(args.result).write_text(json.dumps(res))
        return

    if not args.data:
        ap.error("--data is required")
    work = Path(tempfile.mkdtemp(prefix="tokbench-"))
    try:
        extract = Path(args.cache) if args.cache else work / "extract"
        docs = find_docs(Path(args.data).expanduser(), extract)
        if args.max_docs and "paths" in docs and args.max_docs < len(docs["paths"]):
            keep = sorted(random.Random(0).sample(range(len(docs["paths"])), args.max_docs))
            docs["paths"] = [docs["paths"][i] for i in keep]
        spec = work / "docs.json"
        spec.write_text(json.dumps(docs))
        cache = work / "token-cache"  # empty: the first ulmfit_lab run is cold
        fa = run_side(args, "fastai", spec, cache)
        ours = run_side(args, "ours", spec, cache)
        warm = run_side(args, "ours_warm", spec, cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    same_tokens = fa["token_digests"] == ours["token_digests"]
    same_ids = fa["id_digests"] == ours["id_digests"]
    keep = ("seconds", "peak_pss_mb", "peak_rss_mb", "peak_anon_mb", "max_rss_single_mb")
    result = {
        "benchmark": "tokenization: fastai tokenize_df vs ulmfit_lab tokenize (+ vocab + ids on disk)",
        "data": str(args.data), "max_docs": args.max_docs, "workers": args.workers, "machine": machine(),
        "docs": fa["docs"], "tokens": fa["tokens"],
        "fastai": {**{k: fa[k] for k in keep}, "seconds_with_vocab": fa["seconds_with_vocab"],
                   "tokens_per_s": round(fa["tokens"] / fa["seconds"])},
        "ulmfit_lab": {**{k: ours[k] for k in keep}, "seconds_tokenize": ours["seconds_tokenize"],
                       "tokens_per_s": round(ours["tokens"] / ours["seconds"])},
        "ulmfit_lab_warm": {k: warm[k] for k in keep},
        "speedup": round(fa["seconds"] / ours["seconds"], 2),
        "warm_over_cold": round(warm["seconds"] / ours["seconds"], 4),
        "pss_ratio": round(fa["peak_pss_mb"] / max(1, ours["peak_pss_mb"]), 2),
        "rss_ratio": round(fa["peak_rss_mb"] / max(1, ours["peak_rss_mb"]), 2),
        "identical": {"tokens": same_tokens, "vocab": fa["vocab"] == ours["vocab"] == warm["vocab"],
                      "ids": same_ids, "n_tokens": fa["tokens"] == ours["tokens"] == warm["tokens"]},
        "token_mismatches": [] if same_tokens else mismatches(fa["token_digests"], ours["token_digests"], docs),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if not all(result["identical"].values()):
        raise SystemExit("outputs differ: see token_mismatches")


if __name__ == "__main__":
    main()
