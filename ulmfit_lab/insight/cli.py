"""The insight subcommands of `ulmfit-lab`: report, interpret, suggest. Each parses its options and calls the
plain function of the same name; a summary is printed as JSON (files written are listed under `files`)."""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = ("report", "interpret", "suggest")


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; found {text!r}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; found {text!r}")
    return v


def add_parsers(sub: argparse._SubParsersAction, overrides_help: str) -> None:
    """Add `report`, `interpret` and `suggest` to `ulmfit-lab`'s parser."""
    d = ("Check labelled data before training: class balance, exact and near duplicates, the same text with "
         "conflicting labels, leakage between train/valid/test, lengths against classifier.max_len, OOV rate "
         "against the pretrained LM's vocab, likely mislabelled rows (cleanlab on cross-validated TF-IDF), "
         "empty-looking and non-English texts. Writes report.html (one page with plots), report.json and "
         "report_rows.csv (every flagged row); every warning says what to do.")
    sp = sub.add_parser("report", help="A data report before training (duplicates, leakage, label issues, ...).",
                        description=d)
    sp.add_argument("source", metavar="CONFIG_OR_DATA", help="a YAML config (its data section is read) or the "
                    "labelled data itself: a CSV/TSV/JSONL/parquet table, a class-per-folder tree or an archive")
    sp.add_argument("overrides", nargs="*", help=overrides_help)
    sp.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report)")
    sp.add_argument("--lm", default=None, help="pretrained LM for the OOV check: a shipped name or an LM folder "
                    "(default: lm_pretrain.weights when lm_pretrain.source=pretrained)")
    sp.add_argument("--max-label-rows", type=_positive, default=20000,
                    help="the label-issue check fits on at most this many labelled rows (default 20000)")

    d = ("Interpret a trained classifier on labelled texts: top losses with their text, the confusion matrix, "
         "errors per class, and word attributions (integrated gradients on the embeddings) for the highest-loss "
         "texts and any --text; writes interpret.html (words highlighted), interpret.json, top_losses.csv and "
         "confusion_matrix.png.")
    sp = sub.add_parser("interpret", help="Top losses, confusion, per-class errors and word attributions.",
                        description=d)
    sp.add_argument("run", metavar="RUN", help="a finished run directory, or a model folder with --data")
    sp.add_argument("--split", choices=["valid", "test"], default="valid", help="the run's split (default valid)")
    sp.add_argument("--data", default=None, help="a labelled table to interpret on instead of the run's split")
    sp.add_argument("--text-column", default="text", help="text column of --data (default text)")
    sp.add_argument("--label-column", default="label", help="label column of --data (default label)")
    sp.add_argument("--text", action="append", default=[], metavar="TEXT",
                    help="a text to attribute (repeatable), besides the highest-loss ones")
    sp.add_argument("--n-top", type=_count, default=20, help="top-loss rows on the page (default 20)")
    sp.add_argument("--n-attr", type=_count, default=5, help="highest-loss texts with attributions (default 5)")
    sp.add_argument("--steps", type=_positive, default=32, help="integrated-gradients steps (default 32)")
    sp.add_argument("--out", default=None, help="output folder (default: RUN/interpret)")

    d = ("Pick the texts to label next: the most uncertain ones (margin between the two likeliest classes), "
         "spread over the encoder's feature space by uncertainty-weighted k-means (one per cluster). With an LM "
         "folder instead of a classifier (nothing labelled yet) the picks are a random sample. Writes a CSV with "
         "an empty label column, ready to label.")
    sp = sub.add_parser("suggest", help="Which texts to label next (uncertainty + diversity), as a CSV to label.",
                        description=d)
    sp.add_argument("model", metavar="MODEL", help="a classifier (model folder or run directory) or an LM folder")
    sp.add_argument("unlabelled", metavar="UNLABELLED", help="CSV/TSV/JSONL/parquet with a text column, or .txt "
                    "with one text per line")
    sp.add_argument("--n", type=_positive, default=100, help="how many texts to suggest (default 100)")
    sp.add_argument("--output", "-o", default=None, help="the CSV to write (default: UNLABELLED_to_label.csv)")
    sp.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    sp.add_argument("--exclude", default=None, help="a table of texts already labelled: never suggested")
    sp.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    sp.add_argument("--beta", type=_positive, default=10, help="uncertain candidates per pick (default 10)")


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run an insight subcommand from parsed arguments; prints a JSON summary."""
    if args.command == "report":
        from .report import data_report

        rep = data_report(args.source, args.overrides, args.out, args.lm, args.max_label_rows)
        for f in rep.warnings:
            print(f"ulmfit-lab: warning: {f.check}: {f.message}. {f.action}", file=sys.stderr)
        out = {"warnings": len(rep.warnings), "findings": {f.check: {"severity": f.severity, "count": f.count}
                                                           for f in rep.findings}}
        files = rep.files
    elif args.command == "interpret":
        from .interpret import interpret

        res = interpret(args.run, args.out, args.split, args.data, args.text, args.n_top, args.n_attr, args.steps,
                        args.text_column, args.label_column)
        out = {k: res.metrics[k] for k in ("n", "accuracy", "macro_f1")}
        out["attributed"] = len(res.attributions)
        files = res.files
    else:
        from .suggest import suggest

        res = suggest(args.model, args.unlabelled, args.n, args.output, args.text_column, args.exclude, args.seed,
                      args.beta)
        out = {"suggested": len(res.table), "advice": res.advice}
        files = res.files
    print(json.dumps({"command": args.command, **out, "files": files}, indent=2, default=str))
    return 0

