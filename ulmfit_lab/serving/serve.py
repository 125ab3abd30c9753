"""`ulmfit-lab serve MODEL`: the classifier behind HTTP (FastAPI + uvicorn), micro-batched.

    POST /predict   {"texts": [...]} -> {"labels": [...], "probabilities": [[...], ...], "classes": [...]}
    GET  /health    liveness, queue and batching counters
    GET  /metadata  labels, model card, versions, precision, limits
    GET  /docs      the OpenAPI page (/openapi.json)

A single model's requests go through one background thread with continuous batching (`ContinuousBatcher`,
continuous.py): each request is tokenized in a tokenizer thread, its documents join the running batch between
LSTM segments and leave it when they end, so the model always runs with every document in flight; each request
gets its own rows back, in its input order. An ensemble's requests are micro-batched (`MicroBatcher`): the
first waiting request and those arriving within `max_wait_ms` (up to `max_batch_tokens`, estimated) run
through the offline path (`predict_proba`: tokenize, sort by length, batch by token budget) in one call.

Every request is bounded (body bytes, texts, characters per text, texts queued); anything malformed gets a
4xx answer with a JSON error saying what was expected, what was found and what to do, and no input stops
the server. On SIGINT/SIGTERM uvicorn stops accepting connections and lets requests in flight finish; the
batcher then drains its queue and stops.
"""

# no `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (`request: Request`)
# at runtime, and Request is imported inside `create_app`
import asyncio
import contextlib
import json
import platform
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from .continuous import ContinuousBatcher, ServerBusy, admit

__all__ = ["ContinuousBatcher", "MicroBatcher", "RequestError", "ServeLimits", "ServerBusy", "create_app", "serve"]

CHARS_PER_TOKEN = 4  # fastai tokens of English text average a little over 4 characters (space included)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may hold, and how requests are gathered into batches.

    Attributes:
        max_texts: texts per request (more: 413).
        max_chars: characters per text (more: 413).
        max_body_bytes: bytes per request body (more: 413, before parsing).
        max_queued_texts: texts waiting for the model, all requests together (more: 503, retry later).
        max_wait_ms: when the model is idle, how long the first request waits for others to run with it.
        max_batch_tokens: continuous batching: token slots per LSTM segment (documents x steps); micro-batching
            (ensembles): the batcher stops gathering once this many tokens (estimated as characters / 4) are
            waiting, and a larger request runs alone.
    """

    max_texts: int = 256
    max_chars: int = 100_000
    max_body_bytes: int = 10_000_000
    max_queued_texts: int = 8192
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 32768

    def __post_init__(self) -> None:
        bad = [f"{k}: expected at least 1, found {v}" for k, v in asdict(self).items()
               if k != "max_wait_ms" and (not isinstance(v, int) or v < 1)]
        if not self.max_wait_ms >= 0:
            bad.append(f"max_wait_ms: expected 0 or more, found {self.max_wait_ms}")
        if bad:
            raise ConfigError("serve limits: " + "; ".join(bad))


@dataclass
class _Job:
    texts: list[str]
    tokens: int
    future: Future


class MicroBatcher:
    """Runs `predict_proba` on batches gathered from many requests, in one background thread.

    Args:
        predict_proba: texts -> probabilities (one row per text, in input order).
        max_wait_ms: how long to wait for more requests once one is waiting.
        max_batch_tokens: stop gathering at this many estimated tokens.
        max_queued_texts: `submit` refuses (`ServerBusy`) while this many texts wait.
    """

    def __init__(self, predict_proba: Callable[[list[str]], np.ndarray], max_wait_ms: float = 5.0,
                 max_batch_tokens: int = 32768, max_queued_texts: int = 8192):
        self.predict_proba = predict_proba
        self.max_wait = max_wait_ms / 1000
        self.max_batch_tokens = max_batch_tokens
        self.max_queued_texts = max_queued_texts
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ulmfit-lab-batcher", daemon=True)
        self.stats = {"requests": 0, "texts": 0, "batches": 0, "largest_batch_texts": 0, "errors": 0,
                      "queued_texts": 0, "model_seconds": 0.0}

    def start(self) -> "MicroBatcher":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit(self, texts: list[str]) -> Future:
        """Queue `texts`; the future's result is their probabilities, in order.

        Raises:
            ServerBusy: the queue holds `max_queued_texts` already, or the batcher is closed.
        """
        fut: Future = Future()
        with self._lock:
            admit(self.stats, self._closed, len(texts), self.max_queued_texts)
            self._queue.put(_Job(texts, sum(len(t) for t in texts) // CHARS_PER_TOKEN + len(texts), fut))
        return fut

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, answer everything queued, stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)  # after every queued job: the queue is FIFO
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        held: _Job | None = None  # a job that did not fit the last batch: it opens the next one
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is None:
                return
            jobs, tokens, stop = [job], job.tokens, False
            deadline = time.monotonic() + self.max_wait
            while tokens < self.max_batch_tokens:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if tokens + nxt.tokens > self.max_batch_tokens:
                    held = nxt
                    break
                jobs.append(nxt)
                tokens += nxt.tokens
            self._run_batch(jobs)
            if stop:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        with self._lock:
            self.stats["queued_texts"] -= sum(len(j.texts) for j in jobs)
        # a request whose client went away was cancelled: skip its texts (running ones cannot be cancelled)
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        t = time.perf_counter()
        try:
            proba = self.predict_proba(texts)
        except Exception as e:
            if len(jobs) == 1:
                self.stats["errors"] += 1
                jobs[0].future.set_exception(e)
                return
            # one request's texts broke the batch: run each request alone, so only that one fails
            for j in jobs:
                self._run_alone(j)
            return
        self.stats["model_seconds"] += time.perf_counter() - t
        self._count(len(jobs), len(texts))
        start = 0
        for j in jobs:
            j.future.set_result(proba[start:start + len(j.texts)])
            start += len(j.texts)

    def _run_alone(self, job: _Job) -> None:
        try:
            proba = self.predict_proba(job.texts)
        except Exception as e:
            self.stats["errors"] += 1
            job.future.set_exception(e)
            return
        self._count(1, len(job.texts))
        job.future.set_result(proba)

    def _count(self, requests: int, texts: int) -> None:
        self.stats["batches"] += 1
        self.stats["requests"] += requests
        self.stats["texts"] += texts
        self.stats["largest_batch_texts"] = max(self.stats["largest_batch_texts"], texts)


# ---------------------------------------------------------------- request checks


class RequestError(Exception):
    """A bad request: the HTTP status, a short code and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def parse_predict_body(body: bytes, limits: ServeLimits) -> list[str]:
    """The texts of a /predict body, checked; raises `RequestError` (400/413/422) saying what is wrong."""
    example = 'send {"texts": ["first text", "second text"]}'
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RequestError(400, "invalid_encoding", f"the request body is not UTF-8 (byte {e.start}: "
                           f"{body[e.start:e.start + 1]!r}); send JSON encoded as UTF-8") from None
    except RecursionError:
        raise RequestError(400, "invalid_json", f"the request body nests too deeply to parse; {example}") from None
    except ValueError as e:  # json.JSONDecodeError, and Python's limit on digits in an integer
        raise RequestError(400, "invalid_json", f"the request body is not valid JSON ({e}); {example}") from None
    if not isinstance(doc, dict):
        raise RequestError(422, "invalid_request", f"expected a JSON object, found {_type_name(doc)}; {example}")
    unknown = sorted(set(doc) - {"texts"})
    if unknown:
        raise RequestError(422, "invalid_request", f"unknown field(s) {unknown}; expected only 'texts'; {example}")
    if "texts" not in doc:
        raise RequestError(422, "invalid_request", f"missing field 'texts'; {example}")
    texts = doc["texts"]
    if isinstance(texts, str):
        raise RequestError(422, "invalid_request", 'texts: expected a list of strings, found one string; wrap it: '
                           '{"texts": ["your text"]}')
    if not isinstance(texts, list):
        raise RequestError(422, "invalid_request", f"texts: expected a list of strings, found {_type_name(texts)}; "
                           f"{example}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise RequestError(422, "invalid_request", f"texts: expected strings, found {len(bad)} item(s) that are "
                           f"not (positions {bad[:5]}, first {_type_name(texts[bad[0]])}); send each text as a "
                           "JSON string")
    if len(texts) > limits.max_texts:
        raise RequestError(413, "too_many_texts", f"found {len(texts)} texts, expected at most {limits.max_texts} "
                           "per request (--max-texts); split them over several requests")
    long = [i for i, t in enumerate(texts) if len(t) > limits.max_chars]
    if long:
        raise RequestError(413, "text_too_long", f"{len(long)} text(s) have more than {limits.max_chars} "
                           f"characters (--max-chars; positions {long[:5]}, first {len(texts[long[0]])} "
                           "characters); shorten them, or start the server with a larger --max-chars")
    return texts


async def read_body(request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `max_bytes`."""
    too_large = ("the request body has {} bytes, expected at most " + f"{max_bytes} (--max-body-bytes); "
                 "send fewer texts per request, or start the server with a larger --max-body-bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, "body_too_large", too_large.format(int(declared)))
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:  # no (or a false) Content-Length: stop reading here
            raise RequestError(413, "body_too_large", too_large.format(f"more than {max_bytes}"))
        parts.append(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------- the app


def model_card(folder: Path, predictor) -> dict[str, Any]:
    """What /metadata says about the model: its model.json (each member's, for an ensemble), the training
    config when the folder has one, and a README.md model card when it has one."""
    import yaml

    members = getattr(predictor, "members", None)
    meta = {name: p.meta for name, p in members.items()} if members else predictor.meta
    first = next(iter(members.values())).meta if members else predictor.meta
    m = first["model"]
    card: dict[str, Any] = {
        "summary": f"AWD-LSTM classifier (ULMFiT): embedding {m['emb_sz']}, {m['n_layers']} LSTM layers of "
                   f"{m['n_hid']}, head {first.get('head')}, {len(predictor.labels)} classes"
                   + (f", ensemble of {sorted(members)}" if members else ""),
        "model": meta, "config": None, "readme": None}
    with contextlib.suppress(OSError, yaml.YAMLError):
        card["config"] = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        card["readme"] = (folder / "README.md").read_text(encoding="utf-8")
    return card


def versions() -> dict[str, str]:
    import fastai
    import fastapi
    import torch
    import uvicorn

    from .._version import __version__

    return {"ulmfit_lab": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "fastai": fastai.__version__, "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__}


def create_app(model: str | Path, precision: str = "auto", limits: ServeLimits | None = None,
               device: str | None = None):
    """The FastAPI app serving `model` (a model or ensemble folder, or a run directory).

    The model is loaded here, so a bad folder fails before any port is opened (`CheckpointError`); the
    batcher thread starts and stops with the app (its lifespan).

    Args:
        model: as for `ulmfit-lab predict`.
        precision: 'auto', 'fp32', 'bf16', 'fp16' or 'int8' (see `Predictor`).
        limits: request limits and batching; default `ServeLimits()`.
        device: default CUDA when available, else CPU.
    """
    from fastapi import FastAPI

    from ..models.artifact import resolve_model_dir
    from .ensemble import load_model

    limits = limits or ServeLimits()
    folder = resolve_model_dir(model)
    # num_workers=0: tokenize in this process's threads; forking tokenizer processes from a threaded server is unsafe
    predictor = load_model(folder, device=device, precision=precision, num_workers=0)
    predictor.predict_proba(["warm up"])  # spaCy and the kernels set up now, not in the first request
    labels = list(predictor.labels)
    card, vers = model_card(folder, predictor), versions()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # an ensemble's members each run their own model: they share a batch through the offline path
        batcher = (MicroBatcher(predictor.predict_proba, limits.max_wait_ms, limits.max_batch_tokens,
                                limits.max_queued_texts) if getattr(predictor, "members", None) else
                   ContinuousBatcher(predictor, limits.max_wait_ms, limits.max_batch_tokens, limits.max_queued_texts))
        app.state.batcher = batcher.start()
        try:
            yield
        finally:  # uvicorn has let the requests in flight finish by now
            await asyncio.to_thread(app.state.batcher.close)

    app = FastAPI(title="ulmfit-lab classifier", version=vers["ulmfit_lab"], lifespan=lifespan,
                  description=f"{card['summary']}. Labels: {labels}. POST texts to /predict.")
    _add_predict_route(app, predictor, labels, limits)
    _add_info_routes(app, {"labels": labels, "precision": predictor.precision, "device": str(_device(predictor)),
                           "model_dir": str(folder), "card": card, "versions": vers, "limits": asdict(limits)})
    return app


def _schemas(limits: ServeLimits) -> tuple[type, type, type]:
    """The pydantic models of /predict's request, its answer and an error, for the OpenAPI page."""
    from pydantic import BaseModel, Field

    class PredictRequest(BaseModel):
        texts: list[str] = Field(description=f"the texts to classify (at most {limits.max_texts}, each at most "
                                 f"{limits.max_chars} characters)", examples=[["a wonderful film", "dull"]])

    class PredictResponse(BaseModel):
        labels: list[Any] = Field(description="the most probable label of each text, in input order (multi-label: "
                                  "a list of labels; multi-task: an object, task -> label)")
        probabilities: list[list[float]] = Field(description="one row per text, columns in `classes` order")
        classes: list[Any] = Field(description="the label of each probability column")

    class ErrorBody(BaseModel):
        code: str
        message: str = Field(description="what was expected, what was found, and what to do")

    class ErrorResponse(BaseModel):
        error: ErrorBody

    return PredictRequest, PredictResponse, ErrorResponse


def _error(status: int, code: str, message: str, headers: dict | None = None):
    """The JSON answer to a request that cannot be served: `{"error": {"code", "message"}}`."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _add_predict_route(app, predictor, labels: list, limits: ServeLimits) -> None:
    """POST /predict: the body read and checked here, the texts run by the app's batcher."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    from .predict import decode_rows  # a label, a list of labels (multi-label) or one per task

    PredictRequest, PredictResponse, ErrorResponse = _schemas(limits)
    errors = {s: {"model": ErrorResponse, "description": d} for s, d in [
        (400, "malformed JSON or not UTF-8"), (413, "a limit exceeded: body size, texts, characters per text"),
        (422, "well-formed JSON of the wrong shape or types"), (503, "queue full or shutting down: retry later")]}

    @app.post("/predict", response_model=PredictResponse, responses=errors,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request):
        """Labels and class probabilities for each text, in input order.

        Requests share the model's batches: their texts join the running batch as it goes.
        """
        try:
            body = await read_body(request, limits.max_body_bytes)
            # parsing megabytes of JSON takes a while: off the event loop, which keeps serving the others
            texts = (await asyncio.to_thread(parse_predict_body, body, limits) if len(body) > 1 << 20
                     else parse_predict_body(body, limits))
            if not texts:
                return JSONResponse({"labels": [], "probabilities": [], "classes": labels})
            fut = request.app.state.batcher.submit(texts)
        except RequestError as e:
            return _error(e.status, e.code, e.message)
        except ServerBusy as e:
            return _error(503, "busy", str(e), {"Retry-After": "1"})
        try:
            proba = await asyncio.wrap_future(fut)
        except Exception as e:  # the model failed on this batch: say so, and keep serving
            return _error(500, "prediction_failed", f"prediction failed ({type(e).__name__}: {e}); the server is "
                          "still running; report this with the texts that caused it")
        return JSONResponse({"labels": decode_rows(predictor, proba), "probabilities": proba.tolist(),
                             "classes": labels})


def _add_info_routes(app, info: dict[str, Any]) -> None:
    """GET /health (the batcher's state and counters) and GET /metadata (`info`, fixed when the app starts)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    @app.get("/health")
    async def health(request: Request):
        """`ok` while the batcher runs, with its counters; 503 once it has stopped."""
        batcher = request.app.state.batcher
        return JSONResponse({"status": "ok" if batcher.alive else "stopping", **batcher.stats},
                            status_code=200 if batcher.alive else 503)

    @app.get("/metadata")
    async def metadata():
        """Labels, model card, versions, precision, device, limits."""
        return info


def _device(predictor) -> Any:
    members = getattr(predictor, "members", None)
    return next(iter(members.values())).device if members else predictor.device


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, precision: str = "auto",
          limits: ServeLimits | None = None, shutdown_timeout: float = 60.0, log_level: str = "info") -> None:
    """Serve `model` over HTTP until SIGINT/SIGTERM (requests in flight finish, for `shutdown_timeout` s at most)."""
    import uvicorn

    app = create_app(model, precision, limits)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=shutdown_timeout)
