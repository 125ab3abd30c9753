"""`ulmfit-lab`: a thin command line over the plain functions in `pipeline` and `predict`.

Every training command takes a YAML config and dotted overrides, e.g.
`ulmfit-lab run configs/quickstart.yaml data.path=aclImdb.tar.xz classifier.epochs=2`.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, load_config
from .data import DataError
from .models import CheckpointError
from .rundir import RunLockedError

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
        sp.add_argument("config", help="YAML config file (see configs/)")
        sp.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
    pp = sub.add_parser("predict", help="Predict labels for a file of texts with a trained classifier.",
                        description="Predict with a trained classifier. Writes the input's columns plus "
                        "`prediction` and one `proba_<label>` column per class.")
    pp.add_argument("model", help="a model folder (from SentimentClassifier.save or RUN/classifier/model) or a run dir")
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
                        "pickles. --torchscript adds model.torchscript.pt for serving token ids without fastai.")
    ep.add_argument("model", help="a model folder or a run directory")
    ep.add_argument("output", help="the folder to write")
    ep.add_argument("--torchscript", action="store_true", help="also write the scripted classifier")
    return p


def predict_file(model: str, input_path: str, output: str | None, text_column: str = "text",
                 batch_size: int | None = None, precision: str = "auto", chunk_rows: int = 8192,
                 progress: bool = True) -> None:
    """Read texts from a file, predict, and write them with `prediction` and `proba_*` columns."""
    from .predict import predict_file as run

    n = run(model, input_path, output, text_column, batch_size, precision, chunk_rows, progress)
    if output is not None:
        print(f"wrote {n} predictions to {output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "predict":
            predict_file(args.model, args.input, args.output, args.text_column, args.batch_size, args.precision,
                         args.chunk_rows, not args.no_progress)
            return 0
        if args.command == "export":
            from .export import export_model

            print(f"exported to {export_model(args.model, args.output, args.torchscript)}", file=sys.stderr)
            return 0
        from .pipeline import run_pipeline

        cfg = load_config(args.config, args.overrides)
        res = run_pipeline(cfg, until=_STAGE_CMDS[args.command][0])
        summary = {n: getattr(res, n).metrics for n in ("lm", "lm_finetune", "classifier", "evaluate")
                   if getattr(res, n) is not None and getattr(res, n).metrics}
        for stage_metrics in summary.values():
            stage_metrics.pop("confusion_matrix", None)
        print(json.dumps({"run_dir": cfg.run.dir, "seconds": round(res.seconds, 1), "skipped": res.skipped(),
                          **summary}, indent=2, default=str))
        return 0
    except (ConfigError, DataError, CheckpointError, RunLockedError, FileExistsError) as e:
        print(f"ulmfit-lab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
