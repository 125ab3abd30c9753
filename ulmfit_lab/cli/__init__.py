"""`ulmfit-lab`: a thin command line over the plain functions in `pipeline`, `predict` and `serve`.

Every training command takes a YAML config and dotted overrides, e.g.
`ulmfit-lab run configs/quickstart.yaml data.path=aclImdb.tar.xz classifier.epochs=2`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..config import ConfigError, load_config
from ..data.sources import DataError, DataWarning
from ..fileio import StorageError
from ..insight import cli as insight_cli
from ..lab import cli as lab_cli
from ..logs import console
from ..models.artifact import WEIGHTS, CheckpointError
from ..training import distributed
from ..training.callbacks import TrainingPaused
from ..training.rundir import RunLockedError

_STAGE_CMDS = {
    "lm": ("lm", "Stage 1: pretrain the general-domain LM (or resolve pretrained weights)."),
    "lm-finetune": ("lm_finetune", "Stage 2: fine-tune the LM on the target texts (runs stage 1 if needed)."),
    "train-classifier": ("classifier", "Stage 3: train the classifier (runs stages 1-2 if needed)."),
    "evaluate": ("evaluate", "Evaluate the classifier on the test split: accuracy, macro-F1, confusion matrix."),
    "run": ("evaluate", "The whole pipeline: data, LM, LM fine-tuning, classifier, evaluation."),
}

_OVERRIDES_HELP = (
    "dotted overrides KEY=VALUE, values parsed as YAML, e.g. classifier.epochs=2 data.path=aclImdb.tar.xz "
    "run.dir=runs/x lm_pretrain.source=pretrained lm_pretrain.weights=lm.pth lm_pretrain.vocab=itos.pkl"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ulmfit-lab", description="ULMFiT text classification: LM pretraining, "
                                "LM fine-tuning and classifier training, stage by stage or all at once.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in _STAGE_CMDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text + " Completed stages whose config "
                            "and inputs are unchanged are skipped; an interrupted stage resumes from its "
                            "last finished epoch.")
        sp.add_argument("config", help="a YAML config file, or a shipped config by name (quickstart, tiny, imdb, ...)")
        sp.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
        sp.add_argument("--nproc", type=int, metavar="N",
                        help="train with N processes on this machine (one per GPU; CPU: gloo), re-launched "
                        "under torch.distributed.run; the batch sizes in the config are global. Several "
                        "machines: see the README (torchrun rendezvous)")
    sp = sub.add_parser("ship-lm", help="Package a pretrained LM (fp16 weights, sha256, model card) under a name.",
                        description="Turn a finished `lm` stage (RUN_DIR/lm) into a named LM folder: fp16 "
                        "safetensors, vocab.json, model.json with its sha256, and README.md (the model card). "
                        "Folders in ulmfit_lab/pretrained/ are the registry names lm_pretrain.weights accepts.")
    sp.add_argument("stage", help="the lm stage folder of a finished run, e.g. runs/pretrain_reviews_fwd/lm")
    sp.add_argument("--name", required=True, help="registry name, e.g. reviews-fwd")
    sp.add_argument("--dest", default=None, help="parent folder (default: the package's pretrained/ folder)")
    sp.add_argument("--tokens-before", type=int, default=0, metavar="N",
                    help="tokens the LM had seen before this stage (when it started from lm_pretrain.init): the "
                    "card then reports the tokens seen over all training")
    sp.add_argument("--note", action="append", default=[], help="a line for the card's Notes (repeatable)")
    dp = sub.add_parser("demo", help="The quickstart end to end on IMDb (fetched through fastai without --data).",
                        description="Run a config (default: the shipped quickstart) on IMDb into runs/demo. "
                        "Without --data, IMDb is downloaded and cached by fastai's untar_data(URLs.IMDB) "
                        "(~/.fastai/data/imdb); offline, point --data at a local copy.")
    dp.add_argument("--data", default=None, help="an aclImdb folder, or aclImdb_v1.tar.gz / .tar.xz")
    dp.add_argument("--config", default="quickstart", help="a YAML config or a shipped config's name")
    dp.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
    lab_cli.add_parsers(sub, _OVERRIDES_HELP)
    insight_cli.add_parsers(sub, _OVERRIDES_HELP)
    pp = sub.add_parser("predict", help="Predict labels for a file of texts with a trained classifier.",
                        description="Predict with a trained classifier. Writes the input's columns plus "
                        "`prediction` and one `proba_<label>` column per class.")
    pp.add_argument("model", help="a model folder (SentimentClassifier.save, `export`, RUN/classifier/model, "
                    "RUN/ensemble) or a run dir (its fwd+bwd ensemble when it has one)")
    pp.add_argument("input", help="CSV/TSV/JSONL/parquet with a text column, or a .txt file with one text per line")
    pp.add_argument("--output", "-o", help="output file (.csv/.tsv/.jsonl/.parquet); default: print CSV to stdout")
    pp.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
    pp.add_argument("--batch-size", type=int, default=None,
                    help="at most this many texts per batch (default: as many as a 32k-token budget holds)")
    pp.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default="auto",
                    help="auto: exact fp32 on CPU, mixed precision on GPU; bf16: autocast (CPUs with native "
                    "bf16 run it about twice as fast); int8: dynamic quantization (CPU)")
    pp.add_argument("--chunk-rows", type=int, default=8192, help="rows read and sorted together (default: 8192)")
    pp.add_argument("--no-progress", action="store_true", help="no progress bar")
    ep = sub.add_parser("export", help="Write a self-contained model folder (optionally with TorchScript).",
                        description="Copy a trained classifier into a self-contained folder: weights "
                        "(safetensors), vocab, tokenizer settings, labels, config and a checksum as JSON; no "
                        "pickles. An ensemble is written as one folder holding its members. --torchscript adds "
                        "model.torchscript.pt (per member) for serving token ids without fastai.")
    ep.add_argument("model", help="a model or ensemble folder, or a run directory")
    ep.add_argument("output", help="the folder to write")
    ep.add_argument("--torchscript", action="store_true", help="also write the scripted classifier")
    ep.add_argument("--onnx", action="store_true", help="also write model.onnx (token ids in, probabilities out; "
                    "dynamic batch and length) for onnxruntime")
    _add_serve_parser(sub)
    return p


def _add_serve_parser(sub) -> None:
    from ..serving.serve import ServeLimits

    d = ServeLimits()
    sp = sub.add_parser("serve", help="Serve a classifier over HTTP: POST /predict, GET /health, /metadata, /docs.",
                        description="Serve a trained classifier with FastAPI + uvicorn until Ctrl-C / SIGTERM "
                        "(requests in flight finish first). POST /predict {\"texts\": [...]} answers labels and "
                        "probabilities in input order; concurrent requests are run together in micro-batches. "
                        "Requests over a limit get 413, malformed ones 400/422, each with a JSON error.")
    sp.add_argument("model", help="a model folder (SentimentClassifier.save, `export`, RUN/classifier/model, "
                    "RUN/ensemble) or a run dir")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; "
                    "0.0.0.0 for every interface)")
    sp.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    sp.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default="auto",
                    help="as for predict: auto is exact fp32 on CPU, mixed precision on GPU")
    sp.add_argument("--max-texts", type=int, default=d.max_texts,
                    help=f"texts per request (default: {d.max_texts})")
    sp.add_argument("--max-chars", type=int, default=d.max_chars,
                    help=f"characters per text (default: {d.max_chars})")
    sp.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                    help=f"bytes per request body (default: {d.max_body_bytes})")
    sp.add_argument("--max-queued-texts", type=int, default=d.max_queued_texts,
                    help=f"texts waiting for the model before requests get 503 (default: {d.max_queued_texts})")
    sp.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                    help=f"how long a batch waits for more requests (default: {d.max_wait_ms:g})")
    sp.add_argument("--max-batch-tokens", type=int, default=d.max_batch_tokens,
                    help=f"a batch stops gathering requests at this many tokens, estimated as characters / 4 "
                    f"(default: {d.max_batch_tokens})")
    sp.add_argument("--shutdown-timeout", type=float, default=60.0,
                    help="seconds requests in flight may take to finish after SIGTERM (default: 60)")


def predict_file(model: str, input_path: str, output: str | None, text_column: str = "text",
                 batch_size: int | None = None, precision: str = "auto", chunk_rows: int = 8192,
                 progress: bool = True) -> None:
    """Read texts from a file, predict, and write them with `prediction` and `proba_*` columns."""
    from ..serving.batch import predict_file as run

    n = run(model, input_path, output, text_column, batch_size, precision, chunk_rows, progress)
    if output is not None:
        print(f"wrote {n} predictions to {output}", file=sys.stderr)


def _options_first(argv: list[str]) -> list[str]:
    """Move `--nproc N` next to the command: argparse cannot read an option between the overrides."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a.startswith("--nproc") and argv and argv[0] in _STAGE_CMDS:
            n = 2 if a == "--nproc" else 1
            return [argv[0], *argv[i:i + n], *argv[1:i], *argv[i + n:]]
    return argv


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, DataWarning):  # a remark about the user's data, not about code: no source line
        print(f"ulmfit-lab: warning: {message}", file=file or sys.stderr, flush=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_options_first(sys.argv[1:] if argv is None else argv))
    with warnings.catch_warnings(), console():  # both put back as they were afterwards
        warnings.showwarning = _one_line_warning
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        if args.command == "predict":
            predict_file(args.model, args.input, args.output, args.text_column, args.batch_size, args.precision,
                         args.chunk_rows, not args.no_progress)
            return 0
        if args.command == "export":
            from ..serving.export import export_model

            print(f"exported to {export_model(args.model, args.output, args.torchscript, onnx=args.onnx)}",
                  file=sys.stderr)
            return 0
        if args.command == "serve":
            from ..serving.serve import ServeLimits, serve

            limits = ServeLimits(args.max_texts, args.max_chars, args.max_body_bytes, args.max_queued_texts,
                                 args.max_wait_ms, args.max_batch_tokens)
            serve(args.model, args.host, args.port, args.precision, limits, args.shutdown_timeout)
            return 0
        if args.command in lab_cli.COMMANDS:
            return lab_cli.run(args, argv)
        if args.command in insight_cli.COMMANDS:
            return insight_cli.run(args, argv)
        if args.command == "ship-lm":
            from ..models.hub import SHIPPED, card_from_stage, ship_lm

            stage = Path(args.stage)
            if not (stage / "DONE.json").is_file():
                raise CheckpointError(f"{stage}: not a finished lm stage (no DONE.json); run `ulmfit-lab lm` first")
            card = card_from_stage(stage, args.tokens_before, tuple(args.note))
            out = ship_lm(stage / "model", Path(args.dest or SHIPPED) / args.name, card)
            print(f"wrote {out} ({(out / WEIGHTS).stat().st_size / 1e6:.1f} MB)")
            return 0
        from ..pipeline import run_pipeline

        if args.command == "demo":  # the `run` command on IMDb; the user's overrides last, so they win
            from ..data.demo import fetch_imdb

            data = args.data or fetch_imdb()
            args.command, args.nproc = "run", None
            args.overrides = [f"data.path={data}", "run.dir=runs/demo", *args.overrides]
        cfg = load_config(args.config, args.overrides)
        if args.nproc is not None:  # checked here, before N processes start
            errors = ([f"--nproc: expected at least 1, found {args.nproc}"] if args.nproc < 1
                      else distributed.check_batch_sizes(cfg, args.nproc))
            if errors:
                raise ConfigError("; ".join(errors))
            return distributed.launch(args.nproc, [args.command, args.config, *args.overrides])
        res = run_pipeline(cfg, until=_STAGE_CMDS[args.command][0],
                           command="ulmfit-lab " + " ".join(sys.argv[1:] if argv is None else argv))
        if not distributed.is_main():
            return 0
        summary = {n: getattr(res, n).metrics for n in ("lm", "lm_finetune", "classifier", "evaluate")
                   if getattr(res, n) is not None and getattr(res, n).metrics}
        for stage_metrics in summary.values():
            stage_metrics.pop("confusion_matrix", None)
        print(json.dumps({"run_dir": cfg.run.dir, "seconds": round(res.seconds, 1), "skipped": res.skipped(),
                          **summary}, indent=2, default=str))
        return 0
    except (ConfigError, DataError, CheckpointError, RunLockedError, StorageError, FileExistsError) as e:
        msg = str(e)
        if msg.startswith("Exception occured in `"):  # fastai's prefix for an error raised in a callback
            msg = msg.split("\n", 1)[-1].strip()
        where = "" if distributed.is_main() else f" (rank {distributed.rank()})"
        print(f"ulmfit-lab: error{where}: {msg}", file=sys.stderr)
        return 2
    except TrainingPaused as e:
        if distributed.is_main():
            print(f"ulmfit-lab: {e}", file=sys.stderr)
        return 3
    finally:
        distributed.teardown()

