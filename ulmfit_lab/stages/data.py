"""Stage 0: read and check the data, tokenize it (cached), build the target vocab, store token ids.

The LM fine-tuning corpus is the labelled train texts plus the unlabelled ones; its validation
texts are the classifier's validation texts. The vocab comes from the LM fine-tuning corpus.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from ..data import LABEL, TEXT, LabelledData, load_data
from ..rundir import write_json
from ..text import build_vocab, numericalize, save_dataset, tokenize
from .common import Context, StageResult, run_cached

VERSION = 1


@dataclass(frozen=True)
class DataResult(StageResult):
    vocab_path: str = ""
    classes: list = field(default_factory=list)

    def vocab(self) -> list[str]:
        return json.loads(Path(self.vocab_path).read_text(encoding="utf-8"))

    def split(self, name: str) -> datasets.Dataset | None:
        """Columns `ids` (token ids) and, for labelled splits, `text` and `label` (class index)."""
        path = Path(self.dir) / name
        return datasets.load_from_disk(str(path)) if path.exists() else None


def ids_of(ds: datasets.Dataset) -> list[np.ndarray]:
    return [np.asarray(x, dtype=np.int64) for x in ds.with_format("numpy")["ids"]]


def run(ctx: Context, data: LabelledData | None = None) -> DataResult:
    """Load `ctx.cfg.data` (or `data`, from the Python API) and tokenize it into the run directory."""
    cfg = ctx.cfg.data
    if data is None:
        data = load_data(cfg, ctx.cache_dir)
    tok_settings = {"lang": cfg.lang, "min_freq": cfg.min_freq, "max_vocab": cfg.max_vocab}
    stage = ctx.stage("data", VERSION, data.fingerprint(), tok_settings)

    def body() -> dict:
        classes = data.classes
        cls_index = {c: i for i, c in enumerate(classes)}
        tok = {}
        for name, texts in (("train", data.train[TEXT]), ("valid", data.valid[TEXT]),
                            ("test", None if data.test is None else data.test[TEXT]),
                            ("unlabelled", data.unlabelled or None)):
            if texts is not None:
                tok[name] = tokenize(list(texts), cfg.lang, ctx.cache_dir, ctx.cfg.run.num_workers,
                                     desc=f"Tokenizing {name}")
        lm_sets = [tok["train"]] + ([tok["unlabelled"]] if "unlabelled" in tok else [])
        vocab = build_vocab(lm_sets, cfg.min_freq, cfg.max_vocab)
        write_json(stage.path / "vocab.json", vocab)
        n_tokens = {}
        for name, ds in tok.items():
            ids = numericalize(ds, vocab)
            n_tokens[name] = int(sum(len(x) for x in ids))
            cols = {"ids": [x.tolist() for x in ids]}
            df: pd.DataFrame | None = getattr(data, name) if name != "unlabelled" else None
            if df is not None:
                cols["text"] = df[TEXT].tolist()
                cols["label"] = [cls_index[y] for y in df[LABEL]]
            save_dataset(datasets.Dataset.from_dict(cols), stage.path / name)
        summary = data.summary()
        ctx.log(f"data: {summary['train']} train / {summary['valid']} valid / {summary['test']} test, "
                f"{summary['unlabelled']} unlabelled; vocab {len(vocab)}; tokens {n_tokens}")
        return {"vocab_path": str(stage.path / "vocab.json"), "classes": summary["classes"],
                "metrics": {**summary, "vocab_size": len(vocab), "tokens": n_tokens}}

    return run_cached(ctx, stage, "data", DataResult, {"data": asdict(cfg)}, body)
