"""Named pretrained LMs: shipping (fp16 + sha256 + card), resolving names, folders and URLs with checksums."""

import json
import tarfile

import pytest
import torch
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import load_config, run_pipeline
from ulmfit_lab.data.sources import load_data
from ulmfit_lab.models import hub
from ulmfit_lab.models.artifact import WEIGHTS, CheckpointError
from ulmfit_lab.models.checkpoint import load_lm_checkpoint


@pytest.fixture(scope="module")
def pretrained_stage(tmp_path_factory):
    """A tiny LM pretrained through the real `lm` stage."""
    tmp = tmp_path_factory.mktemp("hub")
    corpus = tmp / "corpus.csv"
    make_reviews(120, seed=8, n_sent=3)[["text"]].to_csv(corpus, index=False)
    cfg = load_config(CONFIGS / "tiny.yaml", ["lm_pretrain.source=scratch", f"lm_pretrain.corpus=[{corpus}]",
                                              "lm_pretrain.epochs=2", "lm_pretrain.lr=0.03",
                                              f"run.dir={tmp / 'run'}", f"run.cache_dir={tmp / 'cache'}"])
    res = run_pipeline(cfg, until="lm")
    return tmp / "run" / "lm", res


@pytest.fixture()
def registry(tmp_path, monkeypatch, pretrained_stage):
    stage, _ = pretrained_stage
    monkeypatch.setattr(hub, "SHIPPED", tmp_path / "pretrained")
    card = hub.card_from_stage(stage, tokens_before=1_000_000, notes=("seconds include pauses",))
    hub.ship_lm(stage / "model", tmp_path / "pretrained" / "tiny-fwd", card)
    return tmp_path / "pretrained" / "tiny-fwd"


def test_shipped_lm_is_fp16_with_checksum_and_card(registry, pretrained_stage):
    stage, res = pretrained_stage
    meta = json.loads((registry / "model.json").read_text())
    assert meta["dtype"] == "float16" and meta["sha256"] == hub.sha256_file(registry / WEIGHTS)
    card = meta["card"]
    assert card["perplexity"] and all(v > 1 for v in card["perplexity"].values())
    assert card["training"]["epochs"] == 2 and card["params"] > 1000
    # tokens seen: the init's plus this stage's two epochs over its training tokens, in the card's title too
    assert card["tokens_seen"] == 1_000_000 + 2 * res.lm.metrics["train_tokens"]
    readme = (registry / "README.md").read_text()
    assert "Perplexity" in readme and f"({card['tokens_seen'] / 1e6:.1f}M tokens seen)" in readme.splitlines()[0]
    assert "- seconds include pauses" in readme
    # fp16 weights load back within fp16 rounding of the trained ones
    shipped, vocab, _ = load_lm_checkpoint(registry)
    trained, vocab2, _ = load_lm_checkpoint(stage / "model")
    assert vocab == vocab2
    for (k, a), b in zip(shipped.state_dict().items(), trained.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3, msg=k)


def test_pipeline_finetunes_from_a_registry_name_offline(registry, tmp_path, cache_dir):
    assert hub.available() == {"tiny-fwd": registry}
    cfg = load_config(CONFIGS / "tiny.yaml", ["lm_pretrain.source=pretrained", "lm_pretrain.weights=tiny-fwd",
                                              f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    data = load_data(cfg.data, tmp_path, train=make_reviews(80, seed=9))
    res = run_pipeline(cfg, until="lm_finetune", data=data)
    assert res.lm.kind == "package" and res.lm.key.startswith("pretrained:")
    scratch = run_pipeline(cfg.replace("lm_pretrain.source=none", f"run.dir={tmp_path / 'run2'}"),
                           until="lm_finetune", data=data)
    before, before_scratch = (r.lm_finetune.metrics["valid_perplexity_before"] for r in (res, scratch))
    assert before < 0.75 * before_scratch  # fine-tuning starts from the pretrained LM, not from scratch


def test_corrupt_shipped_weights_and_unknown_names_are_clear_errors(registry, tmp_path):
    with pytest.raises(CheckpointError, match="no pretrained LM named 'nope'.*tiny-fwd"):
        hub.resolve_lm("nope", tmp_path)
    data = bytearray((registry / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (registry / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        hub.resolve_lm("tiny-fwd", tmp_path)


def test_url_with_checksum_and_archive(registry, tmp_path):
    archive = tmp_path / "tiny-fwd.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(registry, arcname="tiny-fwd")
    good = hub.sha256_file(archive)
    folder = hub.resolve_lm(archive.as_uri(), tmp_path / "cache", sha256=good)
    assert (folder / "model.safetensors").is_file() and (folder / "vocab.json").is_file()
    with pytest.raises(CheckpointError, match="sha256"):
        hub.resolve_lm(archive.as_uri(), tmp_path / "cache2", sha256="0" * 64)
    assert not list((tmp_path / "cache2" / "downloads").glob("*tar.gz"))  # a bad download is not kept


def test_shipping_again_keeps_the_old_folder_until_the_new_one_is_complete(registry, pretrained_stage, monkeypatch):
    stage, _ = pretrained_stage
    before = {p.name: p.read_bytes() for p in registry.iterdir()}
    (registry / "notes.txt").write_text("from an older ship")

    def fail(*_a, **_k):
        raise RuntimeError("interrupted while writing the weights")

    with monkeypatch.context() as m:
        m.setattr(hub.st, "save_file", fail)
        with pytest.raises(RuntimeError, match="interrupted"):
            hub.ship_lm(stage / "model", registry, hub.card_from_stage(stage))
    assert {p.name: p.read_bytes() for p in registry.iterdir() if p.name != "notes.txt"} == before
    hub.ship_lm(stage / "model", registry, hub.card_from_stage(stage))  # replaces the folder whole
    assert sorted(p.name for p in registry.iterdir()) == sorted(before)
    assert sorted(p.name for p in registry.parent.iterdir()) == ["tiny-fwd"]  # no temporary folder left
