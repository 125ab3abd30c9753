"""Load on `ulmfit-lab serve`, on loopback: rising numbers of concurrent clients, every answer checked.

Starts the real server (`ulmfit-lab serve MODEL`, its own process, 127.0.0.1 on a free port) once, then for each
number of clients in `--levels` runs that many client threads for `--level-seconds` (the largest level for
`--seconds`). A client posts 1 to `--max-texts-per-request` texts drawn from the pool (IMDb test reviews of
mixed lengths with `--imdb`) and compares every answer with offline `predict_proba` on the same texts: as many
answers as texts (none lost), labels and probabilities at their positions (none misordered; probabilities within
`--atol`). In the largest level `--bad` bad requests (malformed JSON, non-UTF-8, wrong types and shapes, too many
texts, a text too long) are spread over the run between the good ones; each must get its 4xx JSON error.

Throughput is compared with offline `predict_proba` on the whole pool at the same precision, in tokens/s (the
served texts are a random draw of the pool, so texts/s is given too). Writes JSON and a PNG of latency (p50,
p99) and throughput against the number of clients; exits non-zero on any wrong answer.

The clients run in this process and share the machine with the server: on a small CPU they take part of
it, so the served throughput is a lower bound of what the server does alone. Bounded: loopback only, at most
MAX_CLIENTS clients and MAX_SECONDS per level.

Usage:
  python benchmarks/serve_load.py MODEL --imdb ../shared/data/imdb/aclImdb.tar.xz --paper-size \
      --levels 1 4 16 32 --seconds 60 --out benchmarks/results/serve_load_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quickstart import machine  # noqa: E402

from ulmfit_lab.data.tables import iter_table  # noqa: E402
from ulmfit_lab.models.artifact import read_artifact  # noqa: E402
from ulmfit_lab.serving.ensemble import load_model  # noqa: E402
from ulmfit_lab.toy import make_reviews  # noqa: E402

MAX_CLIENTS, MAX_SECONDS = 256, 600  # bounded: this is a loopback check, not a soak test


def read_pool(args) -> tuple[list[str], str]:
    """At most `--pool` texts (IMDb test reviews in a seeded random order, a table file, or toy reviews)."""
    n = args.pool
    if args.imdb:
        from inference import load_imdb_test

        test = load_imdb_test(args.imdb)
        order = np.random.default_rng(args.seed).permutation(len(test))[:n]
        return test["text"].iloc[order].tolist(), f"{args.imdb}: test split, {n} reviews (numpy seed {args.seed})"
    if args.texts is None:
        return make_reviews(n, seed=0, n_sent=3).text.tolist(), f"toy reviews ({n})"
    texts: list[str] = []
    for df in iter_table(args.texts, args.text_column):
        texts += df[args.text_column].tolist()
        if len(texts) >= n:
            break
    return texts[:n], f"{args.texts}: first {len(texts[:n])} rows"


def bad_requests(limits: dict) -> list[tuple[str, bytes, int, str]]:
    """(name, body, expected status, expected error code)."""
    return [("malformed", b'{"texts": ["a"', 400, "invalid_json"),
            ("empty_body", b"", 400, "invalid_json"),
            ("not_utf8", b'{"texts": ["caf\xe9"]}', 400, "invalid_encoding"),
            ("wrong_type", b'{"texts": [1, 2]}', 422, "invalid_request"),
            ("one_string", b'{"texts": "a"}', 422, "invalid_request"),
            ("not_an_object", b'["a"]', 422, "invalid_request"),
            ("unknown_field", b'{"texts": ["a"], "x": 1}', 422, "invalid_request"),
            ("too_many", json.dumps({"texts": ["a"] * (limits["max_texts"] + 1)}).encode(), 413, "too_many_texts"),
            ("too_long", json.dumps({"texts": ["a" * (limits["max_chars"] + 1)]}).encode(), 413,
             "text_too_long" if limits["max_chars"] + 20 <= limits["max_body_bytes"] else "body_too_large")]


def start_server(model: str, precision: str, extra: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ulmfit_lab.cli", "serve", model, "--host", "127.0.0.1",
                             "--port", str(port), "--precision", precision, *extra], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start; its log: {log}\n{log.read_text()[-3000:]}")


def cpu_use(server_pid: int | None) -> dict | None:
    """CPU seconds so far (Linux /proc): the server, these clients, other processes, idle, stolen by the VM
    host. A level whose `other` is not near 0 shared the machine with something else: rerun it."""
    try:
        import resource

        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        with open(f"/proc/{server_pid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
        ru = resource.getrusage(resource.RUSAGE_SELF)
    except (OSError, ValueError, ImportError, IndexError):
        return None
    server, clients = (int(st[11]) + int(st[12])) / tick, ru.ru_utime + ru.ru_stime
    busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / tick  # user, nice, system, irq, softirq
    return {"server": server, "clients": clients, "other": busy - server - clients, "idle": (v[3] + v[4]) / tick,
            "steal": v[7] / tick}


class Level:
    """One load level: `clients` threads for `seconds`, `n_bad` bad requests spread over it, every answer checked."""

    def __init__(self, url: str, pool: list[str], tokens: np.ndarray, expected: np.ndarray, labels: list, args,
                 clients: int, seconds: float, n_bad: int, bad: list, server_pid: int | None = None):
        self.server_pid = server_pid
        self.url, self.pool, self.tokens, self.expected, self.labels = url, pool, tokens, expected, labels
        self.args, self.clients, self.seconds, self.bad = args, clients, seconds, bad
        self.quota = [n_bad // clients + (i < n_bad % clients) for i in range(clients)]
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.c = {"good_sent": 0, "good_answered": 0, "texts": 0, "tokens": 0, "lost": 0, "mismatches": 0,
                  "unexpected_status": 0, "transport_errors": 0, "bad_sent": 0, "bad_as_expected": 0,
                  "good_right_after_bad": 0, "good_right_after_bad_ok": 0}
        self.in_window = {"texts": 0, "tokens": 0}  # answered before the level's end (not while draining)
        self.bad_by_status: dict[str, int] = {}
        self.problems: list[str] = []

    def _note(self, kind: str, problem: str) -> None:
        with self.lock:
            self.c[kind] += 1
            if len(self.problems) < 20:
                self.problems.append(problem)

    def _send_bad(self, http: httpx.Client, j: int) -> None:
        name, body, status, code = self.bad[j % len(self.bad)]
        resp = http.post("/predict", content=body, headers={"content-type": "application/json"})
        got_code = None
        with contextlib.suppress(ValueError, AttributeError):
            got_code = resp.json().get("error", {}).get("code")
        ok = resp.status_code == status and got_code == code
        with self.lock:
            self.c["bad_sent"] += 1
            self.c["bad_as_expected"] += ok
            key = str(resp.status_code)
            self.bad_by_status[key] = self.bad_by_status.get(key, 0) + 1
        if not ok:
            self._note("unexpected_status", f"bad request {name}: status {resp.status_code}, {resp.text[:200]}")

    def _check(self, idx: np.ndarray, resp: httpx.Response) -> bool:
        if resp.status_code != 200:
            self._note("unexpected_status", f"status {resp.status_code}: {resp.text[:200]}")
            return False
        body = resp.json()
        got, names = np.array(body["probabilities"], dtype=np.float64), body["labels"]
        if len(names) != len(idx) or got.shape[0] != len(idx):
            self._note("lost", f"{len(idx)} texts sent, {len(names)} labels / {got.shape[0]} rows answered")
            return False
        want = self.expected[idx]
        # a label may differ only where offline's top two classes are within the tolerance (random weights)
        top2 = np.sort(want, axis=1)[:, -2:]
        sure = (top2[:, 1] - top2[:, 0]) > 2 * self.args.atol
        wrong_label = [n != self.labels[j] for n, j in zip(names, want.argmax(1), strict=True)]
        if np.any(np.array(wrong_label) & sure) or not np.allclose(got, want, atol=self.args.atol, rtol=0):
            self._note("mismatches", f"texts {idx.tolist()}: max |diff| {float(np.abs(got - want).max()):.2e}")
            return False
        return True

    def client(self, seed: int, start: float) -> None:
        rng = np.random.default_rng(seed)
        quota, bad_sent, prev_bad = self.quota[seed % self.clients], 0, False
        stop = start + self.seconds
        with httpx.Client(base_url=self.url, timeout=300) as http:
            while True:
                now = time.monotonic()
                if now >= stop:
                    break
                # bad requests on schedule: by time t, quota * t / seconds of them
                while bad_sent < quota * (now - start) / self.seconds:
                    self._send_bad(http, seed + bad_sent * self.clients)
                    bad_sent, prev_bad = bad_sent + 1, True
                k = int(rng.integers(1, self.args.max_texts_per_request + 1))
                idx = rng.choice(len(self.pool), size=k, replace=False)
                with self.lock:
                    self.c["good_sent"] += 1
                t = time.perf_counter()
                try:
                    resp = http.post("/predict", json={"texts": [self.pool[j] for j in idx]})
                except httpx.TransportError as e:
                    self._note("transport_errors", f"{type(e).__name__}: {e}")
                    continue
                dt = time.perf_counter() - t
                ok = self._check(idx, resp)
                with self.lock:
                    self.c["good_answered"] += resp.status_code == 200
                    if ok:
                        self.latencies.append(dt)
                        self.c["texts"] += k
                        self.c["tokens"] += int(self.tokens[idx].sum())
                        if time.monotonic() <= stop:
                            self.in_window["texts"] += k
                            self.in_window["tokens"] += int(self.tokens[idx].sum())
                    if prev_bad:
                        self.c["good_right_after_bad"] += 1
                        self.c["good_right_after_bad_ok"] += ok
                prev_bad = False
            for _ in range(bad_sent, quota):  # the rest of the quota (a client whose last request ran long)
                self._send_bad(http, seed + bad_sent * self.clients)
                bad_sent += 1

    def run(self) -> dict:
        before = httpx.get(f"{self.url}/health", timeout=10).json()
        cpu0 = cpu_use(self.server_pid)
        start = time.monotonic()
        threads = [threading.Thread(target=self.client, args=(s, start)) for s in range(self.clients)]
        at_end: dict = {}
        # the server's counters when the window closes (requests still running then are not answered yet)
        timer = threading.Timer(self.seconds, lambda: at_end.update(
            httpx.get(f"{self.url}/health", timeout=10).json(), t=time.monotonic() - start))
        timer.start()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        timer.join()
        wall = time.monotonic() - start
        cpu1 = cpu_use(self.server_pid)
        after = httpx.get(f"{self.url}/health", timeout=10).json()
        lat = np.array(self.latencies) * 1000 if self.latencies else np.full(1, np.nan)
        # throughput over the load itself, three ways: `tokens_per_s`, what was answered while every client was
        # sending, over its duration (low by the work on requests still running at its end: with 30 s latency,
        # much of a 60 s window); `tokens_per_s_with_drain`, everything answered over the wall time (low by the
        # drain, where few documents run); `model_tokens_per_s`, the real tokens (no padding) the server's model
        # ran within the window, from its counters (every one of them for a request answered and checked here,
        # in or after the window; counted at segment ends, so the segment running at the end is left out)
        model_tokens = at_end["tokens"] - before["tokens"] if "tokens" in at_end else None
        return {"clients": self.clients, "seconds": self.seconds, "wall_seconds": round(wall, 2), **self.c,
                "texts_per_s": round(self.in_window["texts"] / self.seconds, 2),
                "tokens_per_s": round(self.in_window["tokens"] / self.seconds, 1),
                "tokens_per_s_with_drain": round(self.c["tokens"] / wall, 1),
                "model_tokens_per_s": None if model_tokens is None else round(model_tokens / self.seconds, 1),
                "window_counters_read_at_s": round(at_end.get("t", float("nan")), 2),
                "latency_ms": {q: round(float(np.percentile(lat, p)), 1)
                               for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
                "bad_by_status": self.bad_by_status, "problems": self.problems,
                "server_batching": self.batching(before, after, wall),
                "server_in_window": self.in_window_counters(before, at_end),
                "cpu_cores_used": None if cpu0 is None or cpu1 is None else
                {k: round((cpu1[k] - cpu0[k]) / wall, 2) for k in cpu0}}

    def in_window_counters(self, before: dict, at_end: dict) -> dict | None:
        """The model's counters over the window alone (`server_batching` adds the drain, where few documents
        run): documents per LSTM step, ms per step, padding (share of token slots), busy (share of the window)."""
        if "tokens" not in at_end:
            return None
        d = {k: at_end[k] - before[k] for k in ("steps", "document_steps", "tokens", "model_seconds")}
        if not d["steps"]:
            return None
        return {"documents_per_step": round(d["document_steps"] / d["steps"], 1),
                "ms_per_step": round(1000 * d["model_seconds"] / d["steps"], 2),
                "padding": round(1 - d["tokens"] / d["document_steps"], 3),
                "model_busy": round(d["model_seconds"] / self.seconds, 3), "tokens": d["tokens"]}

    def batching(self, before: dict, after: dict, wall: float) -> dict:
        """The server's counters over the level: batches (segments, with continuous batching), the share of
        the wall time the model ran (`model_busy`), and with continuous batching the documents running per LSTM
        step and the share of token slots that were padding."""
        d = {k: after[k] - before.get(k, 0) for k in ("requests", "texts", "batches", "model_seconds", "steps",
                                                       "document_steps") if k in after}
        out = {k: d[k] for k in ("requests", "texts", "batches")}
        out |= {"largest_batch_texts": after["largest_batch_texts"], "errors": after["errors"],
                "model_busy": round(d["model_seconds"] / wall, 3)}
        if d.get("steps"):
            out["documents_per_step"] = round(d["document_steps"] / d["steps"], 1)
            out["ms_per_step"] = round(1000 * d["model_seconds"] / d["steps"], 2)
            out["padding"] = round(1 - self.c["tokens"] / d["document_steps"], 3)
        return out


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lv = out["levels"]
    x = [r["clients"] for r in lv]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(x, [r["latency_ms"]["p50"] / 1000 for r in lv], "o-", label="p50")
    a.plot(x, [r["latency_ms"]["p99"] / 1000 for r in lv], "s--", label="p99")
    a.set(xscale="log", xlabel="concurrent clients", ylabel="latency (s)", title="Latency per request")
    a.set_xticks(x, [str(v) for v in x])
    a.minorticks_off()
    a.legend()
    b.plot(x, [r["tokens_per_s"] for r in lv], "o-", label="answered in the window")
    if all(r.get("model_tokens_per_s") is not None for r in lv):
        b.plot(x, [r["model_tokens_per_s"] for r in lv], "s-", label="run by the model in the window")
    b.axhline(out["offline"]["tokens_per_s"], color="gray", ls=":", label="offline predict")
    b.axhline(0.8 * out["offline"]["tokens_per_s"], color="red", ls=":", lw=0.8, label="80% of offline")
    b.set(xscale="log", xlabel="concurrent clients", ylabel="tokens/s", title="Throughput", ylim=(0, None))
    b.set_xticks(x, [str(v) for v in x])
    b.minorticks_off()
    b.legend()
    fig.suptitle(f"ulmfit-lab serve, {out['model']['description']}, {out['precision']}, "
                 f"{out['machine']['cpu']} x{out['machine']['cores']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model folder or run directory, as for `ulmfit-lab serve` (with --paper-size: "
                    "only its vocab is used)")
    ap.add_argument("--imdb", default=None, help="aclImdb folder or archive: the pool is its test reviews")
    ap.add_argument("--texts", default=None, help="a table of texts (CSV/TSV/JSONL/parquet/txt); default: toy reviews")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--paper-size", action="store_true", help="serve a classifier of the paper's size (random "
                    "weights, MODEL's vocab) instead of MODEL: throughput as for the paper's model")
    ap.add_argument("--pool", type=int, default=400, help="texts drawn from (default: 400)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 32], help="numbers of concurrent clients")
    ap.add_argument("--seconds", type=float, default=60, help=f"the largest level's duration (at most {MAX_SECONDS})")
    ap.add_argument("--level-seconds", type=float, default=20, help="the other levels' duration")
    ap.add_argument("--max-texts-per-request", type=int, default=4, help="each request holds 1 to this many texts")
    ap.add_argument("--bad", type=int, default=1000, help="bad requests spread over the largest level")
    ap.add_argument("--precision", default="fp32", help="fp32 (default) is batch-independent, so every answer can "
                    "be held to --atol; int8 scales activations per batch")
    ap.add_argument("--atol", type=float, default=1e-5, help="probabilities: allowed difference from offline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load_cpu.json"))
    ap.add_argument("--server-args", default="", help="`ulmfit-lab serve` options, e.g. '--max-wait-ms 50'")
    args = ap.parse_args()
    args.server_args = shlex.split(args.server_args)
    if not (all(1 <= c <= MAX_CLIENTS for c in args.levels) and 0 < args.seconds <= MAX_SECONDS
            and 0 < args.level_seconds <= MAX_SECONDS):
        raise SystemExit(f"--levels: expected 1..{MAX_CLIENTS} clients, --seconds/--level-seconds: 0..{MAX_SECONDS};"
                         f" found {args.levels}, {args.seconds}, {args.level_seconds}")
    t0 = time.time()
    pool, pool_desc = read_pool(args)
    with tempfile.TemporaryDirectory() as tmp:
        model, model_desc = args.model, {"path": str(args.model), "weights": "trained"}
        if args.paper_size:
            from inference import HEAD, MAX_LEN, PAPER, paper_model

            model = str(Path(tmp) / "paper")
            paper_model(Path(model), read_artifact(args.model)[1], ["neg", "pos"], args.seed)
            model_desc = {"config": PAPER.__dict__, "max_len": MAX_LEN, "head": HEAD,
                          "vocab": f"of {args.model}", "weights": "random (fastai init): throughput does not depend "
                          "on the weights; answers are checked against offline predictions of the same weights"}
        model_desc["description"] = "paper-size model (random weights)" if args.paper_size else Path(model).name
        offline = load_model(model, precision=args.precision, num_workers=0)
        tokens = np.array([len(x) for x in offline.encode(pool)])
        offline.predict_proba(pool[:8])  # warm up, as the server does
        t = time.perf_counter()
        expected = offline.predict_proba(pool)
        offline_s = time.perf_counter() - t
        labels = list(offline.labels)
        # how well the per-position check catches a swap: pairs of different texts whose answers differ
        a = expected[:, 0]
        distinct = float((np.abs(a[:, None] - a[None, :]) > args.atol).sum() / max(1, len(a) * (len(a) - 1)))

        log = Path(tmp) / "server.log"  # its tail is printed if the server does not start
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        proc, url = start_server(model, args.precision, args.server_args, log)
        try:
            limits = httpx.get(f"{url}/metadata", timeout=10).json()["limits"]
            bad = bad_requests(limits)
            levels = sorted(set(args.levels))
            results = []
            for c in levels:
                top = c == levels[-1]
                print(f"{c} clients for {args.seconds if top else args.level_seconds:g} s ...", file=sys.stderr)
                results.append(Level(url, pool, tokens, expected, labels, args, c,
                                     args.seconds if top else args.level_seconds, args.bad if top else 0, bad,
                                     proc.pid).run())
        finally:
            proc.terminate()
            proc.wait(60)
        # offline again once the server is gone: this VM's speed drifts by 10-20% over minutes, so the
        # comparison uses the mean of a run before and one after the levels (both are reported)
        t = time.perf_counter()
        again = offline.predict_proba(pool)
        offline_after_s = time.perf_counter() - t
        if not np.allclose(again, expected, atol=args.atol, rtol=0):
            raise SystemExit("offline predict_proba changed between its two runs: the expected answers are unsure")
        del offline

    runs = [float(tokens.sum()) / offline_s, float(tokens.sum()) / offline_after_s]
    offline_s = (offline_s + offline_after_s) / 2
    off_tps = float(tokens.sum()) / offline_s
    for r in results:
        r["served_over_offline_tokens"] = round(r["tokens_per_s"] / off_tps, 3)
        r["served_over_offline_texts"] = round(r["texts_per_s"] / (len(pool) / offline_s), 3)
        r["served_over_offline_with_drain"] = round(r["tokens_per_s_with_drain"] / off_tps, 3)
        if r["model_tokens_per_s"] is not None:
            r["model_over_offline_tokens"] = round(r["model_tokens_per_s"] / off_tps, 3)
    top = results[-1]
    # the bar is read on the model's tokens within the window where the server counts them (continuous
    # batching): unlike the answered tokens, it is not biased by the latency at the window's edges
    measure = "model_over_offline_tokens" if "model_over_offline_tokens" in top else "served_over_offline_tokens"
    wrong = sum(r[k] for r in results for k in ("lost", "mismatches", "unexpected_status", "transport_errors"))
    out = {"benchmark": "serve_load", "machine": machine(), "command": " ".join(sys.argv), "model": model_desc,
           "precision": args.precision, "data": pool_desc,
           "pool": {"texts": len(pool), "tokens": int(tokens.sum()),
                    "tokens_per_text": {q: int(np.percentile(tokens, p)) for q, p in
                                        (("min", 0), ("p10", 10), ("p50", 50), ("p90", 90), ("max", 100))},
                    "pairs_with_distinct_answers": round(distinct, 4)},
           "texts_per_request": f"1 to {args.max_texts_per_request}, uniform", "server_args": args.server_args,
           "limits": limits, "atol": args.atol,
           "offline": {"texts": len(pool), "tokens": int(tokens.sum()), "seconds": round(offline_s, 2),
                       "texts_per_s": round(len(pool) / offline_s, 2), "tokens_per_s": round(off_tps, 1),
                       "tokens_per_s_before_and_after": [round(x, 1) for x in runs],
                       "note": "seconds: the mean of a run before the levels and one after them"},
           "levels": results,
           "bars": {"throughput_measure": measure, "throughput_over_offline_at_max_clients": top[measure],
                    "throughput_at_least_80pct": top[measure] >= 0.8,
                    "answered_in_window_over_offline": top["served_over_offline_tokens"],
                    "answered_with_drain_over_offline": top["served_over_offline_with_drain"],
                    "wrong_lost_or_misordered_answers": wrong,
                    "bad_requests_sent": top["bad_sent"], "bad_answered_4xx_as_expected": top["bad_as_expected"],
                    "good_right_after_bad": top["good_right_after_bad"],
                    "good_right_after_bad_ok": top["good_right_after_bad_ok"],
                    # levels where other processes took more than 0.15 cores (0 means offline's two runs differ
                    # by more than 15%): the ratios of such a run are not to be trusted
                    "shared_machine": [r["clients"] for r in results if (r["cpu_cores_used"] or {}).get("other", 0)
                                       > 0.15] + ([0] if max(runs) > 1.15 * min(runs) else [])},
           "wall_seconds": round(time.time() - t0, 1)}
    out_path = Path(args.out)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    plot(out, out_path.with_suffix(".png"))
    for r in results:
        print(f"{r['clients']:3d} clients: {r['texts_per_s']:7.2f} texts/s {r['tokens_per_s']:8.0f} tok/s "
              f"({100 * r['served_over_offline_tokens']:.0f}% of offline) p50 {r['latency_ms']['p50']:.0f} ms "
              f"p99 {r['latency_ms']['p99']:.0f} ms; {r['good_answered']}/{r['good_sent']} answered, "
              f"{r['mismatches']} mismatches, bad {r['bad_as_expected']}/{r['bad_sent']} as expected")
        if r.get("model_tokens_per_s") is not None:
            sb = r["server_in_window"]
            print(f"     model in window {r['model_tokens_per_s']:.0f} tok/s "
                  f"({100 * r['model_over_offline_tokens']:.0f}% of offline); answered with the drain "
                  f"{100 * r['served_over_offline_with_drain']:.0f}%; "
                  f"{sb.get('documents_per_step')} documents/step, {sb.get('ms_per_step')} ms/step, "
                  f"padding {sb.get('padding')}, busy {sb['model_busy']} (in the window)")
    print(f"offline: {out['offline']['tokens_per_s']:.0f} tok/s (before / after the levels: "
          f"{runs[0]:.0f} / {runs[1]:.0f}) -> {out_path} (+ .png)")
    if out["bars"]["shared_machine"]:
        print(f"WARNING: other processes used the CPU (levels {out['bars']['shared_machine']}) or offline's two "
              "runs differ by more than 15%: the ratios are unsure; rerun on a quiet machine", file=sys.stderr)
    if wrong or top["bad_sent"] != top["bad_as_expected"]:
        raise SystemExit(f"{wrong} wrong, lost or misordered answers; {top['bad_sent'] - top['bad_as_expected']} "
                         f"bad requests answered otherwise: see {out_path}")


if __name__ == "__main__":
    main()
