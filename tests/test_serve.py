"""`ulmfit-lab serve`: a real server on a free port, real HTTP requests (httpx). Answers equal offline
`predict` in input order, also for concurrent requests (which share the model's batches); bad requests get 4xx JSON
errors and the server lives on; SIGTERM lets a request in flight finish."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from conftest import ROOT, make_random_model
from synth import make_reviews

from ulmfit_lab import cli
from ulmfit_lab.models.artifact import write_ensemble
from ulmfit_lab.serving.ensemble import load_model
from ulmfit_lab.serving.predict import Predictor
from ulmfit_lab.serving.serve import ContinuousBatcher, MicroBatcher, ServeLimits, ServerBusy, create_app

LIMITS = ServeLimits(max_texts=8, max_chars=2000, max_body_bytes=20_000, max_wait_ms=20)
TEXTS = make_reviews(24, seed=5, n_sent=3).text.tolist() + ["", "ok", "é ☃ 😀 \x00", "The plot was dull. " * 20]


@pytest.fixture(scope="module")
def offline(random_model) -> tuple[np.ndarray, list]:
    pred = Predictor.load(random_model, precision="fp32", num_workers=0)
    proba = pred.predict_proba(TEXTS)
    labels = pred.predict(TEXTS)
    assert {"neg", "pos"} == set(labels)  # both answers occur: the order of labels is really checked
    return proba, labels


@contextlib.contextmanager
def running(app):
    """uvicorn serving `app` in a thread, on a port the OS picked (bound here: no race for a free port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def app(random_model):
    return create_app(random_model, "fp32", LIMITS)


@pytest.fixture(scope="module")
def client(app):
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _check(resp: httpx.Response, idx: list[int], offline) -> None:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["classes"] == ["neg", "pos"]
    assert body["labels"] == [offline[1][i] for i in idx]
    np.testing.assert_allclose(np.array(body["probabilities"]).reshape(len(idx), 2), offline[0][idx], atol=1e-6)


def test_predict_equals_offline_predict_in_input_order(client, offline):
    for start in range(0, len(TEXTS), 8):  # LIMITS.max_texts per request
        idx = list(range(start, min(start + 8, len(TEXTS))))
        _check(client.post("/predict", json={"texts": [TEXTS[i] for i in idx]}), idx, offline)
        _check(client.post("/predict", json={"texts": [TEXTS[i] for i in idx[::-1]]}), idx[::-1], offline)
    _check(client.post("/predict", json={"texts": [TEXTS[3]] * 3}), [3, 3, 3], offline)
    _check(client.post("/predict", json={"texts": []}), [], offline)


def test_concurrent_requests_are_micro_batched_and_answered_in_order(client, offline):
    rng = np.random.default_rng(0)
    requests = [rng.choice(len(TEXTS), size=rng.integers(1, 9), replace=False).tolist() for _ in range(32)]
    before = client.get("/health").json()
    barrier = threading.Barrier(16)

    def send(idx: list[int]) -> tuple[list[int], httpx.Response]:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=10)  # the first 16 go out together
        return idx, client.post("/predict", json={"texts": [TEXTS[i] for i in idx]})

    with ThreadPoolExecutor(16) as pool:
        for idx, resp in pool.map(send, requests):
            _check(resp, idx, offline)
    after = client.get("/health").json()
    assert after["requests"] - before["requests"] == 32
    assert after["texts"] - before["texts"] == sum(map(len, requests))
    assert after["batches"] - before["batches"] < 32  # requests shared batches
    assert after["largest_batch_texts"] > 8 and after["queued_texts"] == 0


def test_health_metadata_and_openapi(client, random_model):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["labels"] == ["neg", "pos"] and meta["precision"] == "fp32" and meta["device"] == "cpu"
    assert {"ulmfit_lab", "torch", "fastai", "fastapi", "uvicorn", "python"} <= set(meta["versions"])
    assert meta["limits"]["max_texts"] == 8 and meta["model_dir"] == str(random_model)
    card = meta["card"]
    assert "AWD-LSTM" in card["summary"] and card["model"]["weights_sha256"] and card["model"]["tokenizer"]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["texts"]["type"] == "array"
    assert {"200", "400", "413", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


BAD = [  # (body, status, error code, a phrase of the message)
    (b'{"texts": ["a"', 400, "invalid_json", "not valid JSON"),
    (b"", 400, "invalid_json", "not valid JSON"),
    (b'{"texts": ["caf\xe9"]}', 400, "invalid_encoding", "not UTF-8"),
    (b"[" * 15000, 400, "invalid_json", "nests too deeply"),
    (b'{"texts": [' + b"9" * 5000 + b"]}", 400, "invalid_json", "not valid JSON"),  # Python's digit limit
    (b'["a", "b"]', 422, "invalid_request", "expected a JSON object, found a list"),
    (b'"a"', 422, "invalid_request", "expected a JSON object, found a string"),
    (b'{"texts": "a"}', 422, "invalid_request", "wrap it"),
    (b'{"texts": {"a": 1}}', 422, "invalid_request", "expected a list of strings, found an object"),
    (b'{"texts": ["a", 1, null, ["b"]]}', 422, "invalid_request", "3 item(s) that are not (positions [1, 2, 3]"),
    (b'{"text": ["a"]}', 422, "invalid_request", "unknown field(s) ['text']"),
    (b"{}", 422, "invalid_request", "missing field 'texts'"),
    (b'{"texts": [' + b", ".join([b'"a"'] * 9) + b"]}", 413, "too_many_texts", "found 9 texts, expected at most 8"),
    (b'{"texts": ["a", "' + b"x" * 2001 + b'"]}', 413, "text_too_long", "--max-chars; positions [1]"),
    (b'{"texts": ["' + b"x" * 20_000 + b'"]}', 413, "body_too_large", "expected at most 20000 (--max-body-bytes)"),
]


@pytest.mark.parametrize("body,status,code,phrase", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_json_errors_and_the_server_lives_on(client, offline, body, status, code, phrase):
    resp = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and phrase in err["message"], err
    _check(client.post("/predict", json={"texts": TEXTS[:2]}), [0, 1], offline)


def test_unbounded_bodies_and_wrong_methods(client, offline):
    # chunked, without Content-Length: refused once the limit is read
    resp = client.post("/predict", content=iter([b'{"texts": ["' + b"x" * 8000] * 4))
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"
    assert client.get("/predict").status_code == 405
    assert client.post("/nothing", json={}).status_code == 404
    _check(client.post("/predict", json={"texts": TEXTS[:2]}), [0, 1], offline)


def test_a_failing_prediction_is_a_500_and_the_server_lives_on(client, app, offline, monkeypatch):
    predictor = app.state.batcher.predictor
    # a word none of TEXTS has: the model fails on any batch holding it (as on running out of memory)
    used = set(np.concatenate(predictor.encode(TEXTS)).tolist())
    word = next(w for i, w in enumerate(predictor.vocab)
                if i not in used and w.isalpha() and w.islower() and not w.startswith("xx"))
    boom = predictor.vocab.index(word)
    real = predictor.model.embedding

    class Flaky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if (x == boom).any():
                raise RuntimeError("out of memory")
            return real(x)

    monkeypatch.setattr(predictor.model, "embedding", Flaky())
    before = client.get("/health").json()
    requests = [[0, 1], None, [2, 3, 4], [5]]  # None: the failing text; the others run beside it
    barrier = threading.Barrier(len(requests))

    def send(idx: list[int] | None) -> httpx.Response:
        barrier.wait(timeout=10)
        return client.post("/predict", json={"texts": [word] if idx is None else [TEXTS[i] for i in idx]})

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, requests))
    for idx, resp in zip(requests, answers):
        if idx is None:
            assert resp.status_code == 500 and resp.json()["error"]["code"] == "prediction_failed"
            assert "RuntimeError: out of memory" in resp.json()["error"]["message"]
        else:
            _check(resp, idx, offline)
    assert client.get("/health").json()["errors"] - before["errors"] == 1
    _check(client.post("/predict", json={"texts": TEXTS[:2]}), [0, 1], offline)


def test_an_ensemble_is_served_as_its_mean(random_model, tmp_path):
    bwd = make_random_model(tmp_path / "bwd", seed=1, backwards=True)
    folder = write_ensemble(tmp_path / "ensemble", {"fwd": random_model, "bwd": bwd})
    expected = load_model(folder, precision="fp32", num_workers=0).predict_proba(TEXTS[:8])
    with running(create_app(folder, "fp32", LIMITS)) as url, httpx.Client(base_url=url, timeout=30) as c:
        resp = c.post("/predict", json={"texts": TEXTS[:8]})
        assert resp.status_code == 200, resp.text
        np.testing.assert_allclose(np.array(resp.json()["probabilities"]), expected, atol=1e-6)
        meta = c.get("/metadata").json()
    assert sorted(meta["card"]["model"]) == ["bwd", "fwd"] and "ensemble of ['bwd', 'fwd']" in meta["card"]["summary"]


def _fake_proba(calls: list[int]):
    def proba(texts: list[str]) -> np.ndarray:  # row i: (id of text i, 0), the id read from the text
        calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("boom")
        return np.array([[float(t.split()[0]), 0.0] for t in texts])
    return proba


def test_micro_batcher_gathers_by_token_budget_and_answers_each_request():
    calls: list[int] = []
    batcher = MicroBatcher(_fake_proba(calls), max_wait_ms=200, max_batch_tokens=100)
    sizes = [1, 1, 2, 1, 1]  # texts per request; each text is 39 estimated tokens (152 characters / 4, + 1)
    ids = np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:-1])
    # queued before the thread starts: all waiting at once
    futures = [batcher.submit([f"{i:<3d}" + "x" * 149 for i in req]) for req in ids]
    batcher.start()
    assert [f.result(timeout=10)[:, 0].tolist() for f in futures] == [req.tolist() for req in ids]
    assert calls == [2, 2, 2]  # requests 0+1 (78 tokens), 2 (78; 117 with the next), 3+4
    batcher.close()
    with pytest.raises(ServerBusy, match="shutting down"):
        batcher.submit(["1"])


def test_micro_batcher_fails_only_the_request_that_breaks_a_batch_and_bounds_its_queue():
    calls: list[int] = []
    batcher = MicroBatcher(_fake_proba(calls), max_wait_ms=0, max_batch_tokens=1000, max_queued_texts=4)
    good, bad, other = batcher.submit(["1"]), batcher.submit(["boom"]), batcher.submit(["2", "3"])
    with pytest.raises(ServerBusy, match="4 texts are waiting"):
        batcher.submit(["4"])
    batcher.start()
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(timeout=10)
    assert good.result(timeout=10)[:, 0].tolist() == [1.0] and other.result(timeout=10)[:, 0].tolist() == [2.0, 3.0]
    assert calls == [4, 1, 1, 2]  # the shared batch failed; then each request alone
    assert batcher.submit(["5"]).result(timeout=10)[0, 0] == 5.0 and batcher.alive
    assert batcher.stats["errors"] == 1 and batcher.stats["requests"] == 3
    batcher.close()


@pytest.mark.parametrize("backwards", [False, True])
def test_continuous_batcher_lets_documents_join_midway_and_answers_each_request_in_order(tmp_path, backwards):
    model = make_random_model(tmp_path / "model", seed=2, backwards=backwards)
    predictor = Predictor.load(model, precision="fp32", num_workers=0)
    texts = TEXTS + [t * 3 for t in TEXTS[:6]]  # 1 to ~250 tokens: documents end in every segment
    expected = predictor.predict_proba(texts)
    # 4-step segments and at most 6 documents at a time (24 token slots / 4): documents wait, join midway, leave
    batcher = ContinuousBatcher(predictor, max_wait_ms=0, max_batch_tokens=24, seg_len=8, min_seg=4)
    rng = np.random.default_rng(1)
    requests = [rng.choice(len(texts), size=rng.integers(1, 6), replace=False) for _ in range(12)]
    first = [batcher.submit([texts[i] for i in idx]) for idx in requests[:6]]  # waiting together at the start
    batcher.start()
    while batcher.stats["batches"] < 5:  # the others arrive while documents are running
        time.sleep(0.001)
    futures = first + [batcher.submit([texts[i] for i in idx]) for idx in requests[6:]]
    for idx, fut in zip(requests, futures):
        np.testing.assert_allclose(fut.result(timeout=60), expected[idx], atol=1e-6)
    stats = batcher.stats
    assert stats["requests"] == 12 and stats["texts"] == sum(map(len, requests)) and stats["errors"] == 0
    assert stats["largest_batch_texts"] == 6 and stats["queued_texts"] == 0 and stats["running_texts"] == 0
    assert stats["batches"] > 40  # ~250-token documents in 4- to 8-step segments
    # every real token ran once (`tokens`), padding only in the slots (`document_steps`)
    lengths = np.array([len(x) for x in predictor.encode(texts)])
    assert stats["tokens"] == sum(int(lengths[idx].sum()) for idx in requests) < stats["document_steps"]
    last = batcher.submit(texts[:3])
    batcher.close()  # answers what it holds, then refuses
    np.testing.assert_allclose(last.result(timeout=0), expected[:3], atol=1e-6)
    with pytest.raises(ServerBusy, match="shutting down"):
        batcher.submit(["1"])
    assert not batcher.alive


def test_continuous_batcher_close_answers_a_request_still_being_tokenized(random_model, offline):
    predictor = Predictor.load(random_model, precision="fp32", num_workers=0)
    encode = predictor.encode

    def slow_encode(texts):  # the tokenizer thread is still busy with the second request when the first is done
        time.sleep(0.3)
        return encode(texts)

    predictor.encode = slow_encode
    batcher = ContinuousBatcher(predictor, max_wait_ms=0).start()
    first, second = batcher.submit(TEXTS[:1]), batcher.submit(TEXTS[1:3])
    batcher.close()  # the model thread runs `first` and goes idle while `second` is tokenized: it must not stop
    np.testing.assert_allclose(first.result(timeout=0), offline[0][:1], atol=1e-6)
    np.testing.assert_allclose(second.result(timeout=0), offline[0][1:3], atol=1e-6)
    assert not batcher.alive


def test_cli_refuses_bad_models_and_limits_before_serving(tmp_path, random_model, capsys):
    assert cli.main(["serve", str(tmp_path / "nothing"), "--port", "1"]) == 2
    assert "ulmfit-lab: error: model not found" in capsys.readouterr().err
    assert cli.main(["serve", str(random_model), "--max-texts", "0", "--max-wait-ms", "-1"]) == 2
    err = capsys.readouterr().err
    assert "max_texts: expected at least 1, found 0" in err and "max_wait_ms: expected 0 or more" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_answers_and_sigterm_lets_requests_in_flight_finish(random_model, offline, tmp_path):
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+")
    # a 1 s batching wait keeps the request below in flight while SIGTERM arrives
    proc = subprocess.Popen([sys.executable, "-m", "ulmfit_lab.cli", "serve", str(random_model), "--port", str(port),
                             "--precision", "fp32", "--max-wait-ms", "1000"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (log.seek(0), log.read())[1]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/predict", json={"texts": TEXTS[:5]}, timeout=30)
            while httpx.get(f"{url}/health", timeout=5).json()["queued_texts"] < 5:  # the batcher holds it
                assert not pending.done()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _check(pending.result(), list(range(5)), offline)  # answered in full after SIGTERM
        # uvicorn re-raises the signal once it has shut down gracefully: the exit status says SIGTERM
        assert proc.wait(30) in (0, -signal.SIGTERM), (log.seek(0), log.read())[1]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
