"""Strategy advice: place a dataset in the transfer-learning 2x2 (little/much data x similar/different to the
pretraining corpus) from measurements, and recommend a recipe as config overrides.

The table (cs231n's transfer-learning notes, with ULMFiT's recipe in the "much data" row):

|                 | similar to the LM's corpus           | different                                        |
|-----------------|--------------------------------------|--------------------------------------------------|
| little labelled | classifier on frozen features        | linear probes on earlier layers; LM fine-tuning  |
| much labelled   | LM fine-tuning + gradual unfreezing  | fine-tune all layers, longer schedules           |

Size is the labelled examples per class. Similarity is the pretrained LM's perplexity on the target texts
over its perplexity on its own held-out text, and the share of target tokens missing from its vocab.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from torch import nn

from ..config import Config
from ..device import pick_device
from ..fileio import write_json, write_text
from ..models.artifact import read_checkpoint_meta
from ..models.awd_lstm import build_lm
from ..models.checkpoint import adapt_pretrained, load_lm_checkpoint, read_state_dict, read_vocab
from ..models.hub import available
from ..pipeline import run_pipeline
from ..stages.common import default_cache_dir
from ..stages.data import DataResult
from ..stages.lm import LMResult, lm_perplexity
from ..text.vocab import SPECIAL_TOKENS, UNK, tokenize
from .common import existing_files, finished_result, one_direction

log = logging.getLogger(__name__)

# --- the thresholds of the 2x2, and why ---------------------------------------------------------------
# Little data: fewer than 500 labelled examples per class. ULMFiT's learning curves (paper fig. 3) show its
# largest gains over training from scratch at their low end, 100 to ~1,000 labels (50-500 per class); in that range
# a validation split of ~10% holds a few dozen examples per class, too few to choose between fine-tuning
# variants, and fine-tuning every layer varies a lot with the seed.
SMALL_PER_CLASS = 500
# Similar: the LM predicts the target text at most 1.5x worse (perplexity) than its own held-out text. Measured
# with a small WikiText-2 LM of this package (benchmarks/results/lab_cr/advise_calibration.md): WikiText-2's
# validation text scores 1.05 and news (AG News) 1.39, while sentences of reviews (UCI 1.9, CR 2.7), questions
# (TREC 2.1), tweets (2.4) and opinion phrases (MPQA 6.7) score more.
MAX_SIMILAR_PPL_RATIO = 1.5
# ... and at most 15% of the target's running tokens are outside the LM's vocab. Unknown words all read as
# `xxunk`, which is cheap to predict, so a text full of them gets a deceptively low perplexity (tweets, 16% OOV,
# score a lower ratio than CR, 7% OOV); past this share the perplexity says little and the data counts as
# different. The share itself is a poor similarity measure: it tracks names and rare words more than domain
# (news 11%, CR 7%).
MAX_SIMILAR_OOV = 0.15
MAX_TARGET_TOKENS = 200_000  # the target perplexity is measured on at most this many tokens (a random sample of docs)

RECIPES: dict[str, str] = {
    "classifier_only": "Train a classifier on the frozen pretrained encoder (head only), no LM fine-tuning.",
    "probe": "Fit linear probes on each layer (`ulmfit-lab probe`) and use the best, often an earlier, layer; "
             "fine-tune the LM on the target text to close the domain gap before training the classifier.",
    "lm_finetune_gradual": "ULMFiT as in the paper: LM fine-tuning, then the classifier with gradual unfreezing "
                           "(only the top layers change much: discriminative LRs).",
    "full_finetune_long": "Fine-tune all layers with longer schedules: LM fine-tuning and classifier for twice "
                          "the epochs, every layer unfrozen.",
}


@dataclass(frozen=True)
class Measurements:
    """What the decision rests on. Perplexities and OOV are None when no pretrained LM is configured."""

    n_labelled: int
    n_classes: int
    per_class: float
    smallest_class: int
    n_unlabelled: int
    target_tokens: int
    lm: str | None = None
    lm_perplexity_own: float | None = None
    lm_perplexity_target: float | None = None
    perplexity_ratio: float | None = None
    oov_token_rate: float | None = None
    oov_vocab_rate: float | None = None
    tokens_measured: int = 0


@dataclass(frozen=True)
class Advice:
    size: Literal["small", "large"]
    similarity: Literal["similar", "different", "unknown"]
    recipe: str  # a key of RECIPES, or pretrain_first (no pretrained LM, little data)
    summary: str
    reasons: list[str]
    overrides: list[str]
    measurements: Measurements
    files: dict[str, str] = field(default_factory=dict)


def load_lm(lm: LMResult, cfg: Config) -> tuple[nn.Module, list[str]]:
    if lm.kind == "package":
        model, vocab, _ = load_lm_checkpoint(Path(lm.weights))
        return model, vocab
    vocab = read_vocab(Path(lm.vocab))
    model = build_lm(len(vocab), cfg.model)
    adapt_pretrained(read_state_dict(Path(lm.weights)), vocab, vocab, model)
    return model, vocab


def own_perplexity(lm: LMResult) -> float | None:
    """The LM's perplexity on its own held-out text: from its `lm` stage's metrics, or its model card."""
    if lm.metrics.get("valid_perplexity"):
        return float(lm.metrics["valid_perplexity"])
    if lm.kind != "package":
        return None  # fastai's .pth carries no record of it
    folder = Path(lm.weights)
    done = folder.parent / "DONE.json"  # an LM folder inside a run's lm stage
    if done.is_file():
        ppl = json.loads(done.read_text(encoding="utf-8")).get("result", {}).get("metrics", {}).get("valid_perplexity")
        if ppl:
            return float(ppl)
    card = read_checkpoint_meta(folder)[0].get("card", {}).get("perplexity", {})
    held = [v for k, v in card.items() if k.startswith("held-out")]
    return float(np.exp(np.mean(np.log(held)))) if held else None  # several sources: their geometric mean


def similarity(model: nn.Module, lm_vocab: list[str], token_docs: list[list[str]], cfg: Config, seed: int = 0,
               max_tokens: int = MAX_TARGET_TOKENS) -> dict[str, float]:
    """The LM's perplexity on tokenized documents, and the share of their (non-special) tokens outside its vocab.

    A random sample of whole documents of up to `max_tokens` tokens is read. Unknown words count as `xxunk`
    in the perplexity, as in the LM's own validation, which is why the OOV rate is reported beside it.
    """
    o2i = {w: i for i, w in enumerate(lm_vocab)}
    docs, n_tok = [], 0
    for i in np.random.default_rng(seed).permutation(len(token_docs)):
        docs.append(token_docs[i])
        n_tok += len(token_docs[i])
        if n_tok >= max_tokens:
            break
    special = set(SPECIAL_TOKENS)
    words = [t for d in docs for t in d if t not in special]
    ids = [np.array([o2i.get(t, UNK) for t in d], dtype=np.int64) for d in docs]
    ppl = lm_perplexity(model, ids, cfg.lm_pretrain.bs, cfg.model.bptt, cfg.model.backwards, pick_device(cfg.run))
    return {"perplexity": ppl, "oov_token_rate": sum(t not in o2i for t in words) / max(len(words), 1),
            "tokens": n_tok}


def measure(cfg: Config, data: DataResult, lm: LMResult) -> Measurements:
    """Dataset size, and (with a pretrained LM) perplexity ratio and OOV rates of the target texts."""
    m = data.metrics
    counts = np.bincount(np.concatenate([np.asarray(data.split(s)["label"]) for s in ("train", "valid")]))
    n_lab = int(m["train"] + m["valid"])
    base = dict(n_labelled=n_lab, n_classes=len(data.classes), per_class=n_lab / len(data.classes),
                smallest_class=int(counts.min()), n_unlabelled=int(m["unlabelled"]),
                target_tokens=int(sum(v for k, v in m["tokens"].items() if k != "test")))
    if lm.kind == "none":
        return Measurements(**base)
    # the labelled texts stand for the target domain (unlabelled ones are stored as ids of the target vocab);
    # tokenized split by split, as the data stage did, so the tokens come from its cache
    cache = Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()
    toks = [t for s in ("train", "valid") for t in tokenize(list(data.split(s)["text"]), cfg.data.lang, cache,
                                                            cfg.run.num_workers)["tokens"]]
    model, lm_vocab = load_lm(lm, cfg)
    sim = similarity(model, lm_vocab, toks, cfg, seed=cfg.data.seed)
    special = set(SPECIAL_TOKENS)
    known = set(lm_vocab)
    target_vocab = [w for w in data.vocab() if w not in special and not w.startswith("xxfake")]
    oov_voc = sum(w not in known for w in target_vocab) / max(len(target_vocab), 1)
    ppl_t, oov_tok, n_tok = sim["perplexity"], sim["oov_token_rate"], sim["tokens"]
    ppl_o = own_perplexity(lm)
    return Measurements(**base, lm=lm.weights, lm_perplexity_own=ppl_o, lm_perplexity_target=ppl_t,
                        perplexity_ratio=None if ppl_o is None else ppl_t / ppl_o, oov_token_rate=oov_tok,
                        oov_vocab_rate=oov_voc, tokens_measured=n_tok)


def decide(ms: Measurements, cfg: Config) -> Advice:
    """The 2x2 cell from the measurements and the thresholds above, its recipe and config overrides."""
    size = "small" if ms.per_class < SMALL_PER_CLASS else "large"
    reasons = [f"{ms.n_labelled} labelled examples, {ms.n_classes} classes: {ms.per_class:.0f} per class "
               f"({'<' if size == 'small' else '>='} {SMALL_PER_CLASS}: {size}); smallest class {ms.smallest_class}"]
    if ms.lm is None:
        return _no_lm(ms, cfg, size, reasons)
    if ms.perplexity_ratio is not None:
        similar = ms.perplexity_ratio <= MAX_SIMILAR_PPL_RATIO and ms.oov_token_rate <= MAX_SIMILAR_OOV
        reasons.append(f"pretrained LM perplexity {ms.lm_perplexity_target:.1f} on the target texts vs "
                       f"{ms.lm_perplexity_own:.1f} on its own held-out text: ratio {ms.perplexity_ratio:.2f} "
                       f"(similar if <= {MAX_SIMILAR_PPL_RATIO})")
    else:
        similar = ms.oov_token_rate <= MAX_SIMILAR_OOV
        reasons.append(f"pretrained LM perplexity on the target texts {ms.lm_perplexity_target:.1f}; its own "
                       "held-out perplexity is not recorded, so similarity rests on the OOV rate alone")
    reasons.append(f"{100 * ms.oov_token_rate:.1f}% of the target's tokens (and {100 * ms.oov_vocab_rate:.1f}% of "
                   f"its vocab) are outside the LM's vocab (similar if <= {100 * MAX_SIMILAR_OOV:.0f}% of tokens)")
    similarity = "similar" if similar else "different"
    recipe = {("small", "similar"): "classifier_only", ("small", "different"): "probe",
              ("large", "similar"): "lm_finetune_gradual", ("large", "different"): "full_finetune_long"}[
        (size, similarity)]
    cc, ft = cfg.classifier, cfg.lm_finetune
    overrides = {
        "classifier_only": ["lm_finetune.enabled=false", "classifier.trainable_groups=1"],
        "probe": ["lm_finetune.enabled=true", "classifier.gradual_unfreezing=true", "classifier.trainable_groups=null"],
        "lm_finetune_gradual": ["lm_finetune.enabled=true", "classifier.gradual_unfreezing=true",
                                "classifier.trainable_groups=null", "classifier.lr_decay=2.6"],
        "full_finetune_long": ["lm_finetune.enabled=true", f"lm_finetune.epochs={2 * ft.epochs}",
                               f"classifier.epochs={2 * cc.epochs}", "classifier.trainable_groups=null"],
    }[recipe]
    if recipe in ("probe", "full_finetune_long") and ms.n_unlabelled == 0:
        reasons.append("no unlabelled target text is configured: LM fine-tuning reads the labelled texts only; "
                       "adding unlabelled in-domain text (data.unlabelled) is the paper's main remedy for a domain gap")
    if recipe == "classifier_only":
        reasons.append("check with `ulmfit-lab probe` that the top layer's frozen features hold the labels, and "
                       "with `ulmfit-lab ablate` whether LM fine-tuning still pays off on this data")
    summary = f"{size} labelled data, {similarity} to the pretrained LM's text -> {recipe}: {RECIPES[recipe]}"
    return Advice(size, similarity, recipe, summary, reasons, overrides, ms)


def _no_lm(ms: Measurements, cfg: Config, size: str, reasons: list[str]) -> Advice:
    shipped = list(available())
    reasons.append("no pretrained LM is configured (lm_pretrain.source=none): similarity cannot be measured, "
                   "and without general-domain pretraining ULMFiT is close to training from scratch")
    if shipped:
        overrides = ["lm_pretrain.source=pretrained", f"lm_pretrain.weights={shipped[0]}"]
        reasons.append(f"shipped pretrained LMs: {', '.join(shipped)}; rerun advise with one of them")
    else:
        overrides = []
        reasons.append("configure one: lm_pretrain.source=pretrained lm_pretrain.weights=FOLDER_OR_PTH, or "
                       "lm_pretrain.source=scratch lm_pretrain.corpus=[GENERAL_TEXT] (e.g. WikiText)")
    if size == "small":
        recipe = "pretrain_first"
        summary = ("small labelled data and no pretrained LM: get or pretrain a general-domain LM first; until "
                   "then TF-IDF + logistic regression (`ulmfit-lab curve --methods tfidf`) is the baseline to beat")
    else:
        recipe = "full_finetune_long"
        overrides += ["lm_finetune.enabled=true", f"lm_finetune.epochs={2 * cfg.lm_finetune.epochs}",
                      f"classifier.epochs={2 * cfg.classifier.epochs}"]
        summary = ("much labelled data and no pretrained LM: an LM fine-tuned on the target text alone, then all "
                   "layers fine-tuned with longer schedules; a pretrained LM would still likely help")
    return Advice(size, "unknown", recipe, summary, reasons, overrides, ms)


def advise(cfg: Config, out_dir: str | Path | None = None) -> Advice:
    """Measure the data and its similarity to the configured pretrained LM, and recommend a recipe.

    Runs the pipeline's `data` stage and resolves (or, with `source: scratch`, pretrains: cached) the `lm`
    stage, in `run.dir`. Writes advice.json, advice.md and advice_overrides.txt (one KEY=VALUE per line,
    to pass to `ulmfit-lab run CONFIG ...`) into `out_dir` (default `run.dir/advise`).
    """
    cfg = one_direction(cfg)
    out = Path(out_dir) if out_dir else Path(cfg.run.dir) / "advise"
    lm = run_pipeline(cfg, until="lm").lm
    data = run_pipeline(cfg, until="data").data
    adv = decide(measure(cfg, data, lm), cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "advice.json", asdict(adv))
    write_text(out / "advice_overrides.txt", "".join(o + "\n" for o in adv.overrides))
    write_text(out / "advice.md", render(adv))
    files = {"json": str(out / "advice.json"), "md": str(out / "advice.md"),
             "png": str(plot_advice([adv], out / "advice.png")), "overrides": str(out / "advice_overrides.txt")}
    log.info(f"advise: {adv.summary}")
    return Advice(**{**{k: getattr(adv, k) for k in adv.__dataclass_fields__}, "files": files})


def read_advice(out_dir: str | Path) -> Advice:
    """The result of a finished `advise` from its folder (advice.json), without measuring anything."""
    path = finished_result(out_dir, "advice.json", "the result", "advise", "advise")
    d = json.loads(path.read_text(encoding="utf-8"))
    d["measurements"] = Measurements(**d["measurements"])
    d["files"] = existing_files(path.parent, {"json": "advice.json", "md": "advice.md", "png": "advice.png",
                                              "overrides": "advice_overrides.txt"})
    return Advice(**d)


def plot_advice(advices: Sequence[Advice], path: Path, labels: Sequence[str] | None = None) -> Path:
    """The 2x2 (labelled examples per class x perplexity ratio) with its thresholds, each cell's recipe, and
    where each dataset lies. A point with too many unknown tokens counts as different whatever its ratio
    (drawn hollow); one without a ratio (no pretrained LM) is drawn at the top edge."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from ..plots import _plt

    plt = _plt()
    labels = list(labels) if labels else [f"{a.measurements.n_labelled} labelled" for a in advices]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    xs = [max(a.measurements.per_class, 1.0) for a in advices]
    ratios = [a.measurements.perplexity_ratio for a in advices]
    x_lo, x_hi = min([SMALL_PER_CLASS / 10, *xs]) / 1.5, max([SMALL_PER_CLASS * 10, *xs]) * 1.5
    y_hi = max([MAX_SIMILAR_PPL_RATIO * 3, *[r for r in ratios if r]]) * 1.3
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(0.8, y_hi)
    ax.axvline(SMALL_PER_CLASS, color="grey", lw=1)
    ax.axhline(MAX_SIMILAR_PPL_RATIO, color="grey", lw=1)
    cells = {("small", "similar"): "classifier_only", ("small", "different"): "probe",
             ("large", "similar"): "lm_finetune_gradual", ("large", "different"): "full_finetune_long"}
    chosen = {(a.size, a.similarity) for a in advices}
    for (size, sim), recipe in cells.items():  # each cell's name in its outer corner, out of the points' way
        cx, ha = (x_lo * 1.1, "left") if size == "small" else (x_hi / 1.1, "right")
        cy, va = (0.8 * 1.04, "bottom") if sim == "similar" else (y_hi / 1.04, "top")
        ax.text(cx, cy, f"{size} / {sim}\n{recipe}", ha=ha, va=va, fontsize=9, alpha=0.85,
                fontweight="bold" if (size, sim) in chosen else "normal",
                bbox={"facecolor": "lightyellow" if (size, sim) in chosen else "white", "alpha": 0.8,
                      "edgecolor": "none"})
    for a, x, r, label in zip(advices, xs, ratios, labels):
        y = r if r else y_hi / 1.6
        oov = a.measurements.oov_token_rate
        hollow = oov is not None and oov > MAX_SIMILAR_OOV
        ax.plot([x], [y], marker="o", ms=9, mfc="none" if hollow else "tab:red", mec="tab:red", ls="none")
        note = f"{label}\n-> {a.recipe}" + ("" if oov is None else f" (OOV {100 * oov:.0f}%)")
        ax.annotate(note, (x, y), textcoords="offset points", xytext=(0, -12), ha="center", va="top", fontsize=8,
                    color="tab:red")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_yticks([1, MAX_SIMILAR_PPL_RATIO, 2, 3, 5, 10][: 4 if y_hi < 5 else 6 if y_hi > 10 else 5])
    ax.set_xlabel(f"labelled examples per class (small < {SMALL_PER_CLASS})")
    ax.set_ylabel(f"LM perplexity on target / on its own text (similar <= {MAX_SIMILAR_PPL_RATIO})")
    ax.set_title("Where the data lies in the transfer 2x2")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def render(adv: Advice) -> str:
    ms = asdict(adv.measurements)
    lines = ["# Transfer strategy advice", "", f"**{adv.summary}**", "", "## Why", ""]
    lines += [f"- {r}" for r in adv.reasons]
    lines += ["", "## Measurements", "", "| measurement | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in ms.items()]
    lines += ["", "## Recommended overrides", "", "```", " ".join(adv.overrides) or "(none)", "```", "",
              f"Thresholds: small < {SMALL_PER_CLASS} labelled per class; similar: perplexity ratio <= "
              f"{MAX_SIMILAR_PPL_RATIO} and token OOV <= {100 * MAX_SIMILAR_OOV:.0f}% (ulmfit_lab/lab/advise.py)."]
    return "\n".join(lines) + "\n"
