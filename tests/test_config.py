import dataclasses
import typing

import pytest
from conftest import CONFIGS

from ulmfit_lab.config import Config, ConfigError, DataConfig, from_dict, load_config


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


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        from_dict(raw, source="cfg.yaml")
    head, *lines = str(e.value).splitlines()
    assert head == f"cfg.yaml: {len(lines)} problem(s):"
    return [line.removeprefix("  - ") for line in lines]


def test_every_problem_one_line_each_in_the_order_of_the_file():
    raw = {"data": {"min_freq": "3", "lang": 3, "unlabelled": ["a", 1]},
           "classifier": {"head": [8, "x"], "epohcs": 2, "betas": [0.9], "clip": "off"},
           "model": {"backwards": 1, "directions": "fwd", "n_hid": True},
           "run": {"device": "tpu", "precision": None, "zzzz": 1, "checkpoint_minutes": [1]}, "bogus": {}}
    assert _problems(raw) == [
        "data.min_freq: expected int, found '3'",  # no quiet "3" -> 3
        "data.lang: expected str, found 3",
        "data.unlabelled: expected a list of str, found ['a', 1]",  # the whole setting, once
        "classifier.head: expected a list of int, found [8, 'x']",
        "classifier.epohcs: unknown key (did you mean 'epochs'?)",
        "classifier.betas: expected a list of 2 (float, float), found [0.9]",
        "classifier.clip: expected float or null, found 'off'",
        "model.backwards: expected bool, found 1",
        "model.directions: expected a list of str, found 'fwd'",
        "model.n_hid: expected int, found True",
        "run.device: expected one of 'auto', 'cpu', 'cuda', found 'tpu'",
        "run.precision: expected one of 'auto', 'fp32', 'bf16', 'fp16', found None",
        "run.zzzz: unknown key (valid keys: dir, seed, device, precision, num_workers, cache_dir, progress, "
        "fused_softmax, checkpoint_minutes, stop_after_minutes)",
        "run.checkpoint_minutes: expected float or null, found [1]",
        "bogus: unknown key (valid keys: data, model, lm_pretrain, lm_finetune, classifier, run)",
    ]


def test_sections_and_keys_of_the_wrong_kind():
    assert _problems({"model": None, "classifier": [1], "run": {1: "x"}, "modle": {}}) == [
        "model: expected a mapping, found None", "classifier: expected a mapping, found [1]",
        "run.1: unknown key (valid keys: dir, seed, device, precision, num_workers, cache_dir, progress, "
        "fused_softmax, checkpoint_minutes, stop_after_minutes)", "modle: unknown key (did you mean 'model'?)"]
    assert _problems([1]) == ["top level: expected a mapping, found [1]"]
    # a section given as its dataclass (`cfg.replace(data=DataConfig(...))`) is checked like a mapping
    assert _problems({"data": DataConfig(max_train="3")}) == ["data.max_train: expected int or null, found '3'"]
    assert from_dict({"data": DataConfig(max_train=3)}).data.max_train == 3


def test_numbers_as_before():
    cfg = from_dict({"classifier": {"lr": "1e-3", "ratio": 32, "betas": [1, "0.5"], "epochs": 2**40},
                     "lm_finetune": {"betas": (0.5, 0.9)}, "run": {"checkpoint_minutes": None}})
    assert cfg.classifier.lr == 1e-3 and cfg.classifier.ratio == 32.0 and isinstance(cfg.classifier.ratio, float)
    assert cfg.classifier.betas == (1.0, 0.5) and cfg.lm_finetune.betas == (0.5, 0.9)  # a list or tuple: a tuple
    assert cfg.classifier.epochs == 2**40 and cfg.run.checkpoint_minutes is None
    assert _problems({"classifier": {"epochs": 2.0, "bs": "8", "lr": True, "wd": 10**400}}) == [
        "classifier.epochs: expected int, found 2.0", "classifier.bs: expected int, found '8'",
        "classifier.lr: expected float, found True", f"classifier.wd: expected float, found {10**400}"]


def test_non_finite_numbers_are_reported_with_the_other_problems():
    nan, inf = float("nan"), float("inf")
    assert _problems({"classifier": {"lr": nan, "epochs": "x", "betas": [0.5, inf], "wd": "nan"},
                      "lm_finetune": {"betas": [nan]}}) == [
        "classifier.lr: must be a finite number, found nan", "classifier.epochs: expected int, found 'x'",
        "classifier.betas: must be finite numbers, found [0.5, inf]",
        "classifier.wd: must be a finite number, found nan",
        "lm_finetune.betas: expected a list of 2 (float, float), found [nan]"]  # the wrong length comes first


def test_value_checks_run_once_the_types_are_right():
    assert _problems({"classifier": {"epochs": 0, "cut_frac": 1.5}, "data": {"valid_pct": 0.6, "test_pct": 0.5},
                      "lm_pretrain": {"source": "scratch"}}) == [
        "classifier.epochs: must be > 0, found 0", "classifier.cut_frac: must be in (0, 1), found 1.5",
        "data.valid_pct + data.test_pct: must leave training data (sum < 1)",
        "lm_pretrain.corpus: source is 'scratch' but no corpus is given (list of paths)"]


def test_every_setting_has_a_strict_type():
    """New settings use config.Int/Float/Bool/Str: a bare `int` would let pydantic read "2" or 2.0 as 2."""
    def bare(tp) -> list:
        if typing.get_origin(tp) is typing.Annotated:
            return []
        return [tp] if tp in (int, float, bool, str) else [b for a in typing.get_args(tp) for b in bare(a)]

    for section in dataclasses.fields(Config):
        hints = typing.get_type_hints(typing.get_type_hints(Config)[section.name], include_extras=True)
        for name, tp in hints.items():
            assert not bare(tp), f"{section.name}.{name}: annotate with config.Int/Float/Bool/Str, not {tp}"
