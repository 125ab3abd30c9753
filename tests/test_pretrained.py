"""Pretrained LMs: fastai's WT103 format (.pth + itos .pkl) and this package's own LM folder."""

import pickle

import pytest
import torch
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import load_config, run_pipeline
from ulmfit_lab.config import ModelConfig
from ulmfit_lab.data.sources import load_data
from ulmfit_lab.models.artifact import CheckpointError
from ulmfit_lab.models.awd_lstm import build_lm
from ulmfit_lab.models.checkpoint import adapt_pretrained

M = ModelConfig(emb_sz=16, n_hid=24, n_layers=2, bptt=16)  # tiny.yaml's sizes


def _write_wt103(tmp_path, vocab):
    """A checkpoint in fastai's WT103 layout: the LM state dict (with optimizer) and a pickled itos."""
    torch.manual_seed(0)
    lm = build_lm(len(vocab), M)
    torch.save({"model": lm.state_dict(), "opt": {}}, tmp_path / "lstm_wt103.pth")
    with open(tmp_path / "itos_wt103.pkl", "wb") as f:
        pickle.dump(vocab, f)
    return lm


def test_embedding_rows_follow_the_vocab_and_new_words_get_the_mean():
    old_vocab = ["xxunk", "xxpad", "xxbos", "film", "great", "awful"]
    old = build_lm(len(old_vocab), M)
    new_vocab = ["xxunk", "xxpad", "xxbos", "awful", "brandnew", "film"]
    new = adapt_pretrained(old.state_dict(), old_vocab, new_vocab, build_lm(len(new_vocab), M))
    ow, nw = old[0].encoder.weight.detach(), new[0].encoder.weight.detach()
    torch.testing.assert_close(nw[3], ow[5])
    torch.testing.assert_close(nw[5], ow[3])
    torch.testing.assert_close(nw[4], ow.mean(0))
    torch.testing.assert_close(new[1].decoder.bias.detach()[4], old[1].decoder.bias.detach().mean())
    assert new[1].decoder.weight is new[0].encoder.weight  # still tied after loading
    torch.testing.assert_close(new[0].rnns[0].weight_hh_l0_raw, old[0].rnns[0].weight_hh_l0_raw)


def test_shape_mismatch_is_a_clear_error():
    vocab = ["xxunk", "xxpad", "a", "b"]
    old = build_lm(len(vocab), ModelConfig(emb_sz=32, n_hid=24, n_layers=2))
    with pytest.raises(CheckpointError, match="does not match model"):
        adapt_pretrained(old.state_dict(), vocab, vocab, build_lm(len(vocab), M))


def test_pipeline_from_fastai_wt103_files(tmp_path, cache_dir):
    train = make_reviews(240, seed=4)
    words = sorted({w for t in train.text for w in t.lower().replace(".", " ").split()})
    vocab = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"] + words[:20]
    pre = _write_wt103(tmp_path, vocab)
    cfg = load_config(CONFIGS / "tiny.yaml", [
        "lm_pretrain.source=pretrained", f"lm_pretrain.weights={tmp_path / 'lstm_wt103.pth'}",
        f"lm_pretrain.vocab={tmp_path / 'itos_wt103.pkl'}", "lm_finetune.enabled=false",
        f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    res = run_pipeline(cfg, until="lm_finetune", data=load_data(cfg.data, tmp_path, train=train))
    from ulmfit_lab.models.checkpoint import load_lm_checkpoint

    lm, target_vocab, _ = load_lm_checkpoint(res.lm_finetune.model_dir)
    o2i = {w: i for i, w in enumerate(vocab)}
    shared = [w for w in target_vocab if w in o2i and w not in ("xxfake",)]
    assert len(shared) > 10
    for w in shared:
        torch.testing.assert_close(lm[0].encoder.weight[target_vocab.index(w)], pre[0].encoder.weight[o2i[w]])


def test_missing_pretrained_file_is_an_error(tmp_path, cache_dir):
    cfg = load_config(CONFIGS / "tiny.yaml", ["lm_pretrain.source=pretrained",
                                              f"lm_pretrain.weights={tmp_path / 'missing.pth'}",
                                              f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    with pytest.raises(CheckpointError, match="not found"):
        run_pipeline(cfg, until="lm", data=load_data(cfg.data, tmp_path, train=make_reviews(40)))


def test_pickled_vocab_that_would_run_code_is_refused(tmp_path):
    from ulmfit_lab.models.checkpoint import read_vocab

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump([len], f)  # a global reference: unpickling it would look up code
    with pytest.raises(CheckpointError, match="only a plain list"):
        read_vocab(tmp_path / "evil.pkl")


def test_lm_scratch_pretraining_then_finetune(tmp_path, cache_dir):
    corpus = tmp_path / "corpus.csv"
    make_reviews(200, seed=21, n_sent=3)[["text"]].to_csv(corpus, index=False)
    cfg = load_config(CONFIGS / "tiny.yaml", ["lm_pretrain.source=scratch", f"lm_pretrain.corpus=[{corpus}]",
                                              "lm_pretrain.epochs=4", "lm_pretrain.lr=0.03",
                                              f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    res = run_pipeline(cfg, until="lm_finetune", data=load_data(cfg.data, tmp_path, train=make_reviews(80)))
    assert res.lm.kind == "package" and res.lm.metrics["valid_perplexity"] < 60
    # the fine-tuning stage starts from the pretrained LM, so it starts far better than chance
    assert res.lm_finetune.metrics["valid_perplexity_before"] < 0.5 * res.data.metrics["vocab_size"]


@pytest.mark.parametrize("lm_vocab", [True, False])
def test_target_vocab_keeps_the_pretrained_words_the_texts_lack(tmp_path, cache_dir, lm_vocab):
    """A word the LM knows but the labelled texts never show keeps its id (so its pretrained embedding) with
    data.lm_vocab, and is xxunk without; the texts' own words keep their ids either way."""
    train = make_reviews(120, seed=4)
    specials = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
    _write_wt103(tmp_path, specials + ["film", "zanzibar", "quixotic"])
    cfg = load_config(CONFIGS / "tiny.yaml", [
        "lm_pretrain.source=pretrained", f"lm_pretrain.weights={tmp_path / 'lstm_wt103.pth'}",
        f"lm_pretrain.vocab={tmp_path / 'itos_wt103.pkl'}", f"data.lm_vocab={str(lm_vocab).lower()}",
        f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    test = make_reviews(10, seed=5).assign(text=lambda d: d.text + " zanzibar")
    res = run_pipeline(cfg, until="data", data=load_data(cfg.data, tmp_path, train=train, test=test))
    vocab = res.data.vocab()
    own = [w for w in run_pipeline(load_config(CONFIGS / "tiny.yaml", [
        f"run.dir={tmp_path / 'own'}", f"run.cache_dir={cache_dir}"]), until="data",
        data=load_data(cfg.data, tmp_path, train=train, test=test)).data.vocab() if w != "xxfake"]
    assert vocab[:len(own)] == own  # the texts' words first, ids unchanged
    assert ("zanzibar" in vocab) == lm_vocab and ("quixotic" in vocab) == lm_vocab
    assert len(vocab) % 8 == 0 and len(vocab) <= cfg.data.max_vocab + 8
    ids = res.data.split("test")["ids"]
    assert all((doc[-1] == vocab.index("zanzibar")) if lm_vocab else (doc[-1] == 0) for doc in ids)
    assert res.data.metrics["vocab_from_lm"] == (2 if lm_vocab else 0)
