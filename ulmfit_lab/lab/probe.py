"""Layer-wise linear probes: how much of the label each layer of a frozen encoder already holds.

Each layer's hidden states (the embedding output, then each LSTM layer's output) are pooled over a
text's tokens as the classifier pools them, [last, max, mean], and a logistic regression is fit on the
training texts per layer. Its validation accuracy says which layer's features carry the labels: high at
the top means the encoder's own features suffice (a classifier on frozen features will do); high only
lower down means the top layers are specialised to their LM task and need fine-tuning or replacing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import Config
from ..device import pick_device
from ..fileio import write_json
from ..models.checkpoint import load_lm_checkpoint
from ..pipeline import run_pipeline
from ..serving.predict import load_fastai_classifier
from ..stages.data import DataResult, ids_of
from ..text.vocab import PAD
from .common import existing_files, finished_result, one_direction, shared_lm, write_table

log = logging.getLogger(__name__)

Encoder = Literal["pretrained", "finetuned", "classifier"]
ENCODERS: tuple[str, ...] = ("pretrained", "finetuned", "classifier")
CS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried; the best on valid is kept


@dataclass(frozen=True)
class LayerProbe:
    """One layer's probe: features of size `dim` (3 x hidden size), the chosen `C`, accuracies."""

    encoder: str
    layer: int
    name: str
    dim: int
    C: float
    train_accuracy: float
    valid_accuracy: float
    test_accuracy: float | None


@dataclass(frozen=True)
class ProbeResult:
    """Probes per encoder and layer; `majority` is the valid accuracy of always predicting the top class."""

    layers: list[LayerProbe]
    majority: float
    model_dirs: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)

    def table(self, split: str = "valid") -> pd.DataFrame:
        """Accuracy on `split` (valid, test or train) per layer (rows) and encoder (columns)."""
        df = pd.DataFrame([asdict(p) for p in self.layers])
        df["layer"] = [f"{p.layer}: {p.name}" for p in self.layers]
        return df.pivot(index="layer", columns="encoder", values=f"{split}_accuracy")[
            list(dict.fromkeys(df["encoder"]))]

    def best(self, encoder: str) -> LayerProbe:
        return max((p for p in self.layers if p.encoder == encoder), key=lambda p: p.valid_accuracy)


@torch.inference_mode()
def layer_features(enc: nn.Module, docs: list[np.ndarray], bs: int = 64, max_len: int | None = None,
                   backwards: bool = False) -> list[np.ndarray]:
    """Pooled [last, max, mean] features per layer of a fastai `AWD_LSTM`, in eval mode (no dropout).

    The layers run one by one on whole texts, right-padded: an LSTM's output at a real token does not
    depend on the padding after it, so each text's features are the same in any batch. Running a whole
    text at once equals the classifier's chunk-by-chunk BPT3C, which carries the hidden state across
    chunks. `max_len`: keep the last `max_len` tokens, as the classifier's pooling does.

    Returns:
        One array per layer (embedding first), each (n_texts, 3 * layer width).
    """
    was_training = enc.training
    enc.eval()
    device = next(enc.parameters()).device
    seqs = [(d[::-1] if backwards else d)[-max_len:] if max_len else (d[::-1] if backwards else d) for d in docs]
    seqs = [s if len(s) else np.array([PAD]) for s in seqs]
    order = np.argsort([-len(s) for s in seqs], kind="stable")  # similar lengths per batch: less padding
    out: list[list[np.ndarray]] = [[] for _ in range(len(enc.rnns) + 1)]
    for start in range(0, len(order), bs):
        idx = order[start:start + bs]
        lens = torch.tensor([len(seqs[i]) for i in idx], device=device)
        x = torch.full((len(idx), int(lens.max())), PAD, dtype=torch.long, device=device)
        for row, i in enumerate(idx):
            x[row, :len(seqs[i])] = torch.as_tensor(np.asarray(seqs[i], dtype=np.int64))
        mask = (torch.arange(x.shape[1], device=device)[None] < lens[:, None]).unsqueeze(-1)  # (bs, T, 1)
        h = enc.encoder(x)  # (bs, T, emb_sz): the embedding, without its training-time dropouts
        hs = [h]
        for rnn in enc.rnns:  # WeightDropout(LSTM): in eval mode the plain LSTM, from a zero state
            h, _ = rnn(h)
            hs.append(h)
        for layer, h in enumerate(hs):
            last = h[torch.arange(len(idx), device=device), lens - 1]
            mx = h.masked_fill(~mask, float("-inf")).max(1).values
            mean = (h * mask).sum(1) / lens[:, None]
            out[layer].append(torch.cat([last, mx, mean], 1).float().cpu().numpy())
    enc.train(was_training)
    inverse = np.argsort(order)
    return [np.concatenate(f)[inverse] for f in out]


def _fit_probe(xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], cs: tuple[float, ...]) -> tuple[float, dict]:
    """Standardised features + L2 logistic regression; the `C` with the best valid accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    best: tuple[float, float, dict] | None = None
    # one BLAS thread: these matrices are small, and on a busy CPU OpenBLAS's spinning threads made the fits
    # 30-50x slower (measured: 100 s vs 2 s for one layer of 2,716 x 768)
    with threadpool_limits(limits=1, user_api="blas"):
        for c in cs:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            clf.fit(xs["train"], ys["train"])
            acc = {s: float((clf.predict(x) == ys[s]).mean()) for s, x in xs.items()}
            if best is None or acc["valid"] > best[1]:
                best = (c, acc["valid"], acc)
    return best[0], best[2]


def _encoder_module(model_dir: str, kind: str, device: torch.device) -> nn.Module:
    if kind == "classifier":
        return load_fastai_classifier(model_dir)[0][0].module.to(device)  # SentenceEncoder -> AWD_LSTM
    return load_lm_checkpoint(Path(model_dir))[0][0].to(device)


def probe(cfg: Config, encoders: tuple[str, ...] = ("pretrained", "finetuned"), out_dir: str | Path | None = None,
          cs: tuple[float, ...] = CS) -> ProbeResult:
    """Fit a linear probe on every layer of each encoder and report accuracies per layer.

    Args:
        cfg: the run's config. Its pipeline runs (cached) as far as each encoder needs.
        encoders: `pretrained`: the general-domain LM on the target vocab, before LM fine-tuning (run in
            `out_dir/pretrained` with `lm_finetune.enabled=false`; a random encoder when no LM is
            configured); `finetuned`: after LM fine-tuning (the config's own run); `classifier`: the
            trained classifier's encoder.
        out_dir: where the tables and plot go (default `run.dir/probe`).
        cs: the inverse regularisation strengths tried per layer; the best on the validation split is
            kept, so valid accuracy is optimistic and test accuracy (when there is a test split) is not.

    Returns:
        A `ProbeResult`; writes probe.csv, probe.md, probe.json and probe.png into `out_dir`.
    """
    bad = [e for e in encoders if e not in ENCODERS]
    if bad or not encoders:
        raise ValueError(f"encoders {list(encoders)}: expected some of {list(ENCODERS)}")
    cfg = shared_lm(one_direction(cfg))
    out = Path(out_dir) if out_dir else Path(cfg.run.dir) / "probe"
    rows: list[LayerProbe] = []
    model_dirs: dict[str, str] = {}
    majority = 0.0
    for kind in encoders:
        if kind == "pretrained":
            res = run_pipeline(cfg.replace("lm_finetune.enabled=false", f"run.dir={out / 'pretrained'}"),
                               until="lm_finetune")
            model_dirs[kind] = res.lm_finetune.model_dir
        elif kind == "finetuned":
            res = run_pipeline(cfg, until="lm_finetune")
            model_dirs[kind] = res.lm_finetune.model_dir
        else:
            res = run_pipeline(cfg, until="classifier")
            model_dirs[kind] = res.classifier.model_dir
        data: DataResult = res.data
        splits = {s: data.split(s) for s in ("train", "valid", "test") if data.split(s) is not None}
        ys = {s: np.asarray(ds["label"]) for s, ds in splits.items()}
        majority = float((ys["valid"] == np.bincount(ys["train"]).argmax()).mean())
        enc = _encoder_module(model_dirs[kind], kind, pick_device(cfg.run))
        feats = {s: layer_features(enc, ids_of(ds), cfg.classifier.bs, cfg.classifier.max_len, cfg.model.backwards)
                 for s, ds in splits.items()}
        for layer in range(len(feats["train"])):
            xs = {s: f[layer] for s, f in feats.items()}
            c, acc = _fit_probe(xs, ys, cs)
            name = "embedding" if layer == 0 else f"lstm {layer}"
            rows.append(LayerProbe(kind, layer, name, xs["train"].shape[1], c, acc["train"], acc["valid"],
                                   acc.get("test")))
            log.info(f"probe {kind} layer {layer} ({name}): valid accuracy {acc['valid']:.4f}"
                     + (f", test {acc['test']:.4f}" if "test" in acc else "") + f" (C={c})")
    result = ProbeResult(rows, majority, model_dirs)
    files = _write(result, out, random_init=cfg.lm_pretrain.source == "none")
    return ProbeResult(rows, majority, model_dirs, files)


def read_probe(out_dir: str | Path) -> ProbeResult:
    """The result of a finished `probe` from its folder (probe.json), without refitting anything."""
    path = finished_result(out_dir, "probe.json", "the result", "probe", "the probes")
    d = json.loads(path.read_text(encoding="utf-8"))
    files = existing_files(path.parent, {k: f"probe.{k}" for k in ("csv", "md", "json", "png")})
    return ProbeResult([LayerProbe(**p) for p in d["layers"]], d["majority_valid_accuracy"], d["model_dirs"], files)


def _write(res: ProbeResult, out: Path, random_init: bool) -> dict[str, str]:
    df = pd.DataFrame([asdict(p) for p in res.layers])
    if df["test_accuracy"].isna().all():
        df = df.drop(columns="test_accuracy")
    notes = [f"Linear probes (standardised features, L2 logistic regression, C chosen on valid from {list(CS)}) "
             "on [last, max, mean] pooled hidden states of each layer of the frozen encoder.",
             f"Majority-class valid accuracy: {res.majority:.4f}."]
    if random_init:
        notes.append("No pretrained LM is configured (lm_pretrain.source=none): `pretrained` is a randomly "
                     "initialised encoder, and `finetuned` an LM trained on the target texts alone.")
    files = write_table(df, out / "probe", "Layer-wise linear probes", notes)
    write_json(out / "probe.json", {"majority_valid_accuracy": res.majority, "model_dirs": res.model_dirs,
                                    "layers": [asdict(p) for p in res.layers]})
    files["json"] = str(out / "probe.json")
    files["png"] = str(_plot(df, res.majority, out / "probe.png"))
    return files


def _plot(df: pd.DataFrame, majority: float, path: Path) -> Path:
    from ..plots import _plt

    plt = _plt()
    encoders = list(dict.fromkeys(df["encoder"]))
    layers = sorted(df["layer"].unique())
    split_cols = [c for c in ("valid_accuracy", "test_accuracy") if c in df]
    n_bars = len(encoders) * len(split_cols)
    width = 0.8 / n_bars
    fig, ax = plt.subplots(figsize=(1.6 * len(layers) + 3, 4))
    k = 0
    for enc in encoders:
        sub = df[df["encoder"] == enc].set_index("layer")
        for col in split_cols:
            vals = [sub.loc[layer, col] if layer in sub.index else np.nan for layer in layers]
            ax.bar(np.arange(len(layers)) + (k - (n_bars - 1) / 2) * width, vals, width,
                   label=f"{enc} ({col.split('_')[0]})", hatch="//" if col.startswith("test") else None)
            k += 1
    ax.axhline(majority, color="grey", ls="--", lw=1, label="majority class")
    names = df.drop_duplicates("layer").set_index("layer")["name"]
    ax.set_xticks(range(len(layers)), [f"{layer}: {names[layer]}" for layer in layers])
    lo = max(0.0, min(majority, float(np.nanmin(df[split_cols].values))) - 0.05)
    ax.set_ylim(lo, 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title("Linear probe accuracy per layer")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
