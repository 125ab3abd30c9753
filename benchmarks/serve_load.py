"""Load on `ulmfit-lab serve`, on loopback: N concurrent clients for T seconds, every answer checked.

Starts the real server (`ulmfit-lab serve MODEL`, its own process, 127.0.0.1 on a free port), then N client
threads post `--texts-per-request` texts drawn from the pool for `--seconds`. Every answer is compared with
offline `predict` on the same texts (labels equal, probabilities within `--atol`); every `--bad-every`-th
request of a client is a bad one (malformed JSON, non-UTF-8, wrong types, too many texts, a text too long),
which must get its 4xx JSON error. Writes throughput against offline `predict_proba` on the same pool,
latency percentiles, the server's batching counters and every mismatch, as JSON.

The clients run in this process and share the machine with the server: on a small CPU they take part of
it, so the served texts/s is a lower bound of what the server does alone.

Usage:
  python benchmarks/serve_load.py MODEL [--texts reviews.csv] --clients 16 --seconds 20 --out serve_load.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
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
from ulmfit_lab.serving.ensemble import load_model  # noqa: E402
from ulmfit_lab.toy import make_reviews  # noqa: E402

MAX_CLIENTS, MAX_SECONDS = 256, 600  # bounded: this is a loopback check, not a soak test


def read_pool(path: str | None, text_column: str, n: int) -> list[str]:
    """At most `n` texts from a table file, or toy reviews."""
    if path is None:
        return make_reviews(n, seed=0, n_sent=3).text.tolist()
    texts: list[str] = []
    for df in iter_table(path, text_column):
        texts += df[text_column].tolist()
        if len(texts) >= n:
            break
    return texts[:n]


def bad_requests(limits: dict) -> list[tuple[str, bytes, int, str]]:
    """(name, body, expected status, expected error code)."""
    return [("malformed", b'{"texts": ["a"', 400, "invalid_json"),
            ("not_utf8", b'{"texts": ["caf\xe9"]}', 400, "invalid_encoding"),
            ("wrong_type", b'{"texts": [1, 2]}', 422, "invalid_request"),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model folder or run directory, as for `ulmfit-lab serve`")
    ap.add_argument("--texts", default=None, help="a table of texts (CSV/TSV/JSONL/parquet/txt); default: toy reviews")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--pool", type=int, default=2000, help="texts drawn from (default: 2000)")
    ap.add_argument("--clients", type=int, default=16, help=f"concurrent clients (at most {MAX_CLIENTS})")
    ap.add_argument("--seconds", type=float, default=20, help=f"how long the load lasts (at most {MAX_SECONDS})")
    ap.add_argument("--texts-per-request", type=int, default=8)
    ap.add_argument("--bad-every", type=int, default=10, help="every N-th request of a client is a bad one (0: none)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--atol", type=float, default=1e-5, help="probabilities: allowed difference from offline")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load.json"))
    ap.add_argument("server_args", nargs="*", help="`ulmfit-lab serve` options after --, e.g. -- --max-wait-ms 10")
    args = ap.parse_args()
    if not (1 <= args.clients <= MAX_CLIENTS and 0 < args.seconds <= MAX_SECONDS):
        raise SystemExit(f"--clients: expected 1..{MAX_CLIENTS}, --seconds: 0..{MAX_SECONDS}; found {args.clients}, "
                         f"{args.seconds}")

    pool = read_pool(args.texts, args.text_column, args.pool)
    offline = load_model(args.model, precision=args.precision, num_workers=0)
    offline.predict_proba(pool[:8])  # warm up, as the server does
    t0 = time.perf_counter()
    expected = offline.predict_proba(pool)
    offline_s = time.perf_counter() - t0
    labels = list(offline.labels)
    del offline

    log = Path(args.out).with_suffix(".server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(args.model, args.precision, args.server_args, log)
    limits = httpx.get(f"{url}/metadata", timeout=10).json()["limits"]
    bad = bad_requests(limits)
    k = min(args.texts_per_request, limits["max_texts"])
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"ok": 0, "texts": 0, "mismatches": 0, "bad_sent": 0, "bad_as_expected": 0, "unexpected": 0}
    problems: list[str] = []

    def note(problem: str) -> None:
        with lock:
            counts["unexpected" if "status" in problem else "mismatches"] += 1
            if len(problems) < 20:
                problems.append(problem)

    def client(seed: int, stop: float) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=url, timeout=120) as c:
            i = 0
            while time.monotonic() < stop:
                i += 1
                if args.bad_every and i % args.bad_every == 0:
                    name, body, status, code = bad[(seed + i // args.bad_every) % len(bad)]
                    resp = c.post("/predict", content=body, headers={"content-type": "application/json"})
                    ok = resp.status_code == status and resp.json().get("error", {}).get("code") == code
                    with lock:
                        counts["bad_sent"] += 1
                        counts["bad_as_expected"] += ok
                    if not ok:
                        note(f"bad request {name}: status {resp.status_code}, {resp.text[:200]}")
                    continue
                idx = rng.choice(len(pool), size=k, replace=False)
                t = time.perf_counter()
                resp = c.post("/predict", json={"texts": [pool[j] for j in idx]})
                dt = time.perf_counter() - t
                if resp.status_code != 200:
                    note(f"status {resp.status_code}: {resp.text[:200]}")
                    continue
                body = resp.json()
                want = expected[idx]
                got = np.array(body["probabilities"], dtype=np.float64)
                if body["labels"] != [labels[j] for j in want.argmax(1)] or not np.allclose(got, want, atol=args.atol):
                    note(f"texts {idx.tolist()}: max |diff| {float(np.abs(got - want).max()):.2e}")
                with lock:
                    latencies.append(dt)
                    counts["ok"] += 1
                    counts["texts"] += k

    try:
        before = httpx.get(f"{url}/health", timeout=10).json()
        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(s, start + args.seconds)) for s in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.monotonic() - start
        after = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        proc.terminate()
        proc.wait(60)

    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    served = counts["texts"] / wall
    out = {"benchmark": "serve_load", "machine": machine(), "model": str(args.model), "precision": args.precision,
           "clients": args.clients, "seconds": args.seconds, "texts_per_request": k, "pool": len(pool),
           "server_args": args.server_args, "limits": limits,
           "offline": {"texts": len(pool), "seconds": round(offline_s, 3),
                       "texts_per_s": round(len(pool) / offline_s, 1)},
           "served": {"requests_ok": counts["ok"], "texts": counts["texts"], "wall_seconds": round(wall, 2),
                      "texts_per_s": round(served, 1),
                      "latency_ms": {q: round(float(np.percentile(lat, p)), 1)
                                     for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}},
           "served_over_offline": round(served / (len(pool) / offline_s), 3),
           "checks": {"mismatches": counts["mismatches"], "unexpected_status": counts["unexpected"],
                      "bad_sent": counts["bad_sent"], "bad_answered_as_expected": counts["bad_as_expected"],
                      "problems": problems},
           "server_batching": {k2: after[k2] - before.get(k2, 0) for k2 in ("requests", "texts", "batches")}
           | {"largest_batch_texts": after["largest_batch_texts"], "errors": after["errors"]}}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k2: out[k2] for k2 in ("offline", "served", "served_over_offline", "checks")}, indent=2))
    if counts["mismatches"] or counts["unexpected"] or counts["bad_sent"] != counts["bad_as_expected"]:
        raise SystemExit(f"{counts['mismatches']} mismatches, {counts['unexpected']} unexpected answers, "
                         f"{counts['bad_sent'] - counts['bad_as_expected']} bad requests answered otherwise: "
                         f"see {args.out}")


if __name__ == "__main__":
    main()
