"""Stage 0: read and check the data, tokenize it (cached), build the target vocab, store token ids.

The LM fine-tuning corpus is the labelled train texts plus the unlabelled ones; its validation
texts are the classifier's validation texts. The vocab comes from the LM fine-tuning corpus, followed (with a
pretrained LM, `data.lm_vocab`) by the LM's words it lacks: with a few hundred labelled texts, min_freq drops most
of the words the LM knows, and each would read as xxunk in every text to predict. Each split
is stored as one Arrow file (`ids` in the vocab, plus `text` and `label` for labelled splits), written
batch by batch and read back memory-mapped, so no stage holds a Python list per document. `label` is a class
index; multi-label: a 0/1 list over the labels; multi-task: a class index per task (`LabelSpec.targets`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets

from ..data.labels import SINGLE, LabelSpec
from ..data.sources import LABEL, TEXT, LabelledData, load_data
from ..text.corpus import DocIds, texts_hash
from ..text.vocab import build_vocab, extend_vocab, load_vocab, save_vocab, tokenize, write_ids
from ..training import distributed
from .common import Context, StageResult, run_cached

log = logging.getLogger(__name__)
log.addFilter(distributed.main_only)  # every rank runs the stages; rank 0 alone reports them

VERSION = 2


@dataclass(frozen=True)
class DataResult(StageResult):
    vocab_path: str = ""
    classes: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)  # LabelSpec.to_dict() unless single-label

    @property
    def label_spec(self) -> LabelSpec:
        return LabelSpec.from_dict(self.labels, self.classes)

    def vocab(self) -> list[str]:
        return load_vocab(Path(self.vocab_path))

    def split(self, name: str) -> datasets.Dataset | None:
        """Columns `ids` (token ids) and, for labelled splits, `text` and `label` (class index)."""
        path = Path(self.dir) / f"{name}.arrow"
        return datasets.Dataset.from_file(str(path)) if path.exists() else None

    def ids(self, *names: str) -> DocIds:
        """Token ids of the named splits that exist, one after the other (memory-mapped)."""
        sets = [self.split(n) for n in names]
        out = [DocIds.from_dataset(ds) for ds in sets if ds is not None]
        return sum(out[1:], out[0])


def ids_of(ds: datasets.Dataset) -> DocIds:
    return DocIds.from_dataset(ds)


def run(ctx: Context, data: LabelledData | None = None, lm_vocab: list[str] | None = None) -> DataResult:
    """Load `ctx.cfg.data` (or `data`, from the Python API) and tokenize it into the run directory.

    Args:
        ctx: the run's context.
        data: labelled data from the Python API, instead of `ctx.cfg.data`'s files.
        lm_vocab: the pretrained LM's vocab: its words the texts lack follow the texts' own (`extend_vocab`).
    """
    cfg = ctx.cfg.data
    if data is None:
        data = load_data(cfg, ctx.cache_dir)
    tok_settings = {"lang": cfg.lang, "min_freq": cfg.min_freq, "max_vocab": cfg.max_vocab}
    spec = data.spec
    multi = [] if spec.mode == SINGLE else [spec.to_dict()]  # (single-label keys stay as they were)
    extra = [{"lm_vocab": texts_hash(lm_vocab)}] if lm_vocab else []
    stage = ctx.stage("data", VERSION, data.fingerprint(), tok_settings, *multi, *extra)

    def body() -> dict:
        tok = {}
        for name, texts in (("train", data.train[TEXT]), ("valid", data.valid[TEXT]),
                            ("test", None if data.test is None else data.test[TEXT]),
                            ("unlabelled", data.unlabelled or None)):
            if texts is not None:
                tok[name] = tokenize(texts, cfg.lang, ctx.cache_dir, ctx.cfg.run.num_workers,
                                     desc=f"Tokenizing {name}", progress=ctx.cfg.run.progress)
        lm_sets = [tok["train"]] + ([tok["unlabelled"]] if "unlabelled" in tok else [])
        vocab = build_vocab(lm_sets, cfg.min_freq, cfg.max_vocab)
        n_own = sum(w != "xxfake" for w in vocab)
        if lm_vocab:
            vocab = extend_vocab(vocab, lm_vocab, cfg.max_vocab)
        save_vocab(stage.path / "vocab.json", vocab, cfg.min_freq, cfg.max_vocab, cfg.lang)
        n_tokens = {}
        for name, t in tok.items():
            df = getattr(data, name) if name != "unlabelled" else None
            cols = None if df is None else {"text": df[TEXT].tolist(), "label": spec.targets(df[LABEL])}
            write_ids(t, vocab, stage.path / f"{name}.arrow", cols)
            n_tokens[name] = t.n_tokens
        summary = data.summary()
        n_lm = sum(w != "xxfake" for w in vocab) - n_own
        from_lm = f" ({n_own:,} from the texts, {n_lm:,} more from the pretrained LM)" if lm_vocab else ""
        log.info(f"data: {summary['train']} train / {summary['valid']} valid / {summary['test']} test, "
                 f"{summary['unlabelled']} unlabelled; vocab {len(vocab):,}{from_lm}; tokens {n_tokens}")
        return {"vocab_path": str(stage.path / "vocab.json"), "classes": summary["classes"],
                **({"labels": multi[0]} if multi else {}),
                "metrics": {**summary, "vocab_size": len(vocab), "vocab_from_lm": n_lm, "tokens": n_tokens}}

    return run_cached(ctx, stage, DataResult, {"data": asdict(cfg)}, body)
