"""Sample text from a language model folder: see what an LM learned before and after fine-tuning."""

from __future__ import annotations

from pathlib import Path

import torch

from ..text.vocab import BOS, UNK, FastaiTokenizer
from .artifact import CheckpointError
from .checkpoint import load_lm_checkpoint


def detokenize(tokens: list[str]) -> str:
    """Undo fastai's markers well enough to read: xxmaj capitalises, xxup upper-cases, xxbos is dropped."""
    out, mode = [], None
    for t in tokens:
        if t in ("xxmaj", "xxup"):
            mode = t
            continue
        if t in ("xxbos", "xxpad", "xxeos"):
            continue
        out.append(t.capitalize() if mode == "xxmaj" else t.upper() if mode == "xxup" else t)
        mode = None
    text = " ".join(out)
    for p in (" .", " ,", " !", " ?", " ;", " :", " 's", " n't", " )", "( "):
        text = text.replace(p, p.strip() if p != "( " else "(")
    return text


@torch.inference_mode()
def generate(lm_folder: str | Path, prompt: str, n_words: int = 40, temperature: float = 0.8,
             seed: int = 0, no_unk: bool = True) -> str:
    """Continue `prompt` with `n_words` tokens sampled from the forward LM in `lm_folder`.

    Args:
        lm_folder: an LM folder (`RUN/lm/model`, `RUN/lm_finetune/model`, or a shipped LM).
        prompt: text to start from.
        n_words: tokens to sample.
        temperature: below 1 sharpens the distribution, above 1 flattens it.
        seed: for reproducible samples.
        no_unk: never sample the unknown-word token.

    Returns:
        The prompt and its continuation, with fastai's case markers undone.
    """
    model, vocab, meta = load_lm_checkpoint(Path(lm_folder))
    if meta.get("model", {}).get("backwards"):
        raise CheckpointError(f"{lm_folder} is a backward LM; generate() samples left to right: give a forward LM")
    o2i = {w: i for i, w in enumerate(vocab)}
    ids = [BOS] + [o2i.get(t, UNK) for t in FastaiTokenizer(meta.get("lang", "en"))([prompt])[0] if t != "xxbos"]
    model.eval()
    model.reset()
    gen = torch.Generator().manual_seed(seed)
    logits = model(torch.tensor([ids]))[0][0, -1]
    out = list(ids)
    for _ in range(n_words):
        if no_unk:
            logits[UNK] = -float("inf")
        nxt = int(torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1, generator=gen))
        out.append(nxt)
        logits = model(torch.tensor([[nxt]]))[0][0, -1]  # the AWD-LSTM keeps its hidden state between calls
    return detokenize([vocab[i] for i in out])
