import pytest
from conftest import CONFIGS

from ulmfit_lab.config import Config, ConfigError, load_config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.model.n_layers >= 1


def test_paper_hyperparameters_in_imdb_config():
    cfg = load_config(CONFIGS / "imdb.yaml")
    m, ft, cl = cfg.model, cfg.lm_finetune, cfg.classifier
    assert (m.emb_sz, m.n_layers, m.n_hid, m.bptt) == (400, 3, 1152, 70)
    assert ft.betas == (0.7, 0.99) and cl.betas == (0.7, 0.99)
    assert ft.lr == 4e-3 and cl.lr == 1e-2
    assert (cl.cut_frac, cl.ratio, cl.lr_decay) == (0.1, 32, 2.6)
    assert cl.head == [50] and ft.bs == 64 and cl.bs == 64


def test_dotted_overrides_are_typed():
    cfg = load_config(CONFIGS / "tiny.yaml", ["classifier.epochs=3", "classifier.lr=1e-3", "data.path=x.csv",
                                              "classifier.head=[8,4]", "model.backwards=true"])
    assert cfg.classifier.epochs == 3 and cfg.classifier.lr == 1e-3
    assert cfg.data.path == "x.csv" and cfg.classifier.head == [8, 4] and cfg.model.backwards is True


def test_all_problems_reported_at_once_with_hints():
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "tiny.yaml", ["classifier.epohcs=2", "classifier.lr=fast", "model.n_layers=1.5",
                                            "lm_finetune.bs=0", "bogus.x=1", "run.device=tpu"])
    msg = str(e.value)
    assert "classifier.epohcs: unknown key (did you mean 'epochs'?)" in msg
    assert "classifier.lr: expected float, found 'fast'" in msg
    assert "model.n_layers: expected int" in msg
    assert "bogus: unknown key" in msg
    assert "run.device: expected one of" in msg
    assert "6 problem(s)" in msg or "5 problem(s)" in msg


def test_semantic_checks():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["classifier.epochs=0", "lm_finetune.lr=-1", "classifier.cut_frac=1.5",
                           "classifier.drop_mult=0"])
    msg = str(e.value)
    for key in ("classifier.epochs", "lm_finetune.lr", "classifier.cut_frac", "classifier.drop_mult"):
        assert key in msg


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["classifier.epochs"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_configs_are_frozen():
    cfg = load_config(CONFIGS / "tiny.yaml")
    with pytest.raises(AttributeError):
        cfg.classifier.epochs = 5


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the names resolve through the package
    assert load_config("tiny") == load_config(CONFIGS / "tiny.yaml")
    assert load_config("quickstart", ["classifier.epochs=2"]).classifier.epochs == 2
    with pytest.raises(ConfigError, match=r"no shipped config named 'tinny': did you mean 'tiny'\?.*quickstart"):
        load_config("tinny")
    with pytest.raises(ConfigError, match=r"not found: configs/quickstart.yaml .*by name: load_config\('quickstart'\)"):
        load_config("configs/quickstart.yaml")
    (tmp_path / "tiny").write_text("classifier:\n  epochs: 7\n")  # an existing file is a path, not a name
    assert load_config("tiny").classifier.epochs == 7
