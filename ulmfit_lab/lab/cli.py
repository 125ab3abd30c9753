"""The lab's subcommands of `ulmfit-lab`: probe, advise, ablate, curve. Each parses its options and calls the
plain function of the same name; results are printed as JSON (files written are listed under `files`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..config import load_config
from .ablate import GRIDS, VARIANTS, ablate
from .advise import advise
from .curve import METHODS, MIN_STEPS, learning_curve
from .probe import ENCODERS, probe

COMMANDS = ("probe", "advise", "ablate", "curve")


def _names(choices: tuple[str, ...] | list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}; found {text!r}")
        return items

    return parse


def _ints(minimum: int) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            items = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            items = []
        if not items or min(items) < minimum:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers >= {minimum}, e.g. 100,500,1000; "
                                             f"found {text!r}")
        return items

    return parse


def _records(df) -> list[dict]:
    """Table rows for JSON: NaN (a figure that does not apply) as null."""
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def add_parsers(sub: argparse._SubParsersAction, overrides_help: str) -> None:
    """Add the lab's subcommands to `ulmfit-lab`'s parser."""

    def common(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=f"{help_text} {description}")
        sp.add_argument("config", help="a YAML config file, or a shipped config by name (quickstart, tiny, imdb, ...)")
        sp.add_argument("overrides", nargs="*", help=overrides_help)
        sp.add_argument("--out", default=None, help=f"output folder (default: RUN_DIR/{name})")
        return sp

    sp = common("probe", "Linear probes per layer of the frozen encoder.",
                "Pools each layer's hidden states ([last, max, mean]) and fits a logistic regression per layer; "
                "writes probe.csv/.md/.json and probe.png.")
    sp.add_argument("--encoders", type=_names(ENCODERS), default=["pretrained", "finetuned"],
                    help="which encoders: pretrained (before LM fine-tuning), finetuned (after), classifier "
                    "(default: pretrained,finetuned)")
    common("advise", "Recommend a transfer strategy for this data (the 2x2 of size x similarity).",
           "Measures labelled/unlabelled sizes, the pretrained LM's perplexity on the target texts against its own, "
           "and the OOV rate; writes advice.md/.json and advice_overrides.txt.")
    sp = common("ablate", "Run ULMFiT's ablation grid and tabulate validation/test error per variant.",
                f"Variants: {', '.join(VARIANTS)}. Writes ablation.csv/.md (and ablation_runs.csv).")
    sp.add_argument("--grid", choices=list(GRIDS), default="paper", help="which variants (default: paper, all)")
    sp.add_argument("--variants", type=_names(list(VARIANTS)), default=None, help="comma-separated variant names "
                    "instead of a grid")
    sp.add_argument("--seeds", type=_ints(0), default=None, help="comma-separated run seeds (default: run.seed)")
    sp = common("curve", "Few-shot learning curve: accuracy against N labelled examples.",
                "ULMFiT vs the same classifier from scratch vs TF-IDF + logistic regression, stratified samples, "
                "several seeds, one fixed test set; writes curve.csv/.md, curve_points.csv and curve.png.")
    sp.add_argument("--sizes", type=_ints(1), required=True, help="comma-separated N, e.g. 100,500,1000")
    sp.add_argument("--seeds", type=_ints(0), default=[0, 1, 2], help="comma-separated seeds (default: 0,1,2)")
    sp.add_argument("--methods", type=_names(METHODS), default=list(METHODS),
                    help="comma-separated methods (default: ulmfit,scratch,tfidf)")
    sp.add_argument("--min-steps", type=int, default=MIN_STEPS, help="a small N trains with smaller batches and "
                    f"more epochs, at least this many optimizer steps (default {MIN_STEPS}; 0: the config's as is)")
    sp.add_argument("--supervised", action="store_true", help="fine-tune the LM on each point's N texts only, "
                    "instead of once on every text of the labelled pool (semi-supervised, the default)")


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run a lab subcommand from parsed arguments; prints its result as JSON."""
    cfg = load_config(args.config, args.overrides)
    Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.run.dir) / f"command_{args.command}.txt").write_text("ulmfit-lab " + " ".join(argv or sys.argv[1:])
                                                                   + "\n")
    if args.command == "probe":
        res = probe(cfg, tuple(args.encoders), args.out)
        out = {"majority_valid_accuracy": res.majority, "layers": [asdict(p) for p in res.layers]}
    elif args.command == "advise":
        res = advise(cfg, args.out)
        out = {k: v for k, v in asdict(res).items() if k != "files"}
        print(Path(res.files["md"]).read_text(encoding="utf-8"), file=sys.stderr)
    elif args.command == "ablate":
        res = ablate(cfg, args.grid, args.variants, args.seeds, args.out)
        out = {"table": _records(res.table)}
    else:
        res = learning_curve(cfg, args.sizes, args.seeds, tuple(args.methods), not args.supervised, args.out,
                             args.min_steps)
        out = {"summary": _records(res.summary), "definitions": res.definitions}
    print(json.dumps({"command": args.command, **out, "files": res.files}, indent=2, default=str))
    return 0
