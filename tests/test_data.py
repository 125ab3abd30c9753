"""Data sources and the checks that stop bad input before training."""

import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from synth import make_reviews

from ulmfit_lab.config import DataConfig
from ulmfit_lab.data.sources import DataError, load_data


@pytest.fixture()
def df():
    return make_reviews(40, seed=5)


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_table_formats(tmp_path, df, ext):
    path = tmp_path / f"train.{ext}"
    if ext == "csv":
        df.to_csv(path, index=False)
    elif ext == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif ext == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    data = load_data(DataConfig(train=str(path), valid_pct=0.25), tmp_path)
    assert len(data.train) + len(data.valid) == 40 and data.classes == ["neg", "pos"]
    assert set(data.valid.label) == {"neg", "pos"}  # stratified split


def _write_tree(root, df, with_unsup=True):
    for split in ("train", "test"):
        for i, row in df.iterrows():
            d = root / split / row.label
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i}_0.txt").write_text(row.text, encoding="utf-8")
    if with_unsup:
        (root / "train" / "unsup").mkdir()
        for i in range(5):
            (root / "train" / "unsup" / f"{i}_0.txt").write_text(f"unlabelled review {i}")


def test_aclimdb_folder_and_archive(tmp_path, df):
    root = tmp_path / "aclImdb"
    _write_tree(root, df)
    cfg = DataConfig(path=str(root), valid_pct=0.1)
    data = load_data(cfg, tmp_path / "cache")
    assert len(data.test) == 40 and len(data.unlabelled) == 5 and data.classes == ["neg", "pos"]
    archive = tmp_path / "aclImdb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="aclImdb")
    data2 = load_data(DataConfig(path=str(archive), valid_pct=0.1), tmp_path / "cache")
    assert data2.fingerprint() == data.fingerprint()
    # a .zip too, under an upper-case name: one rule (fileio.is_archive) for data and LMs alike
    zipped = shutil.make_archive(str(tmp_path / "AclImdb"), "zip", tmp_path, "aclImdb")
    upper = tmp_path / "ACLIMDB.ZIP"
    Path(zipped).rename(upper)
    assert load_data(DataConfig(path=str(upper), valid_pct=0.1), tmp_path / "cache").fingerprint() == data.fingerprint()


def test_class_folders_without_splits(tmp_path, df):
    for i, row in df.iterrows():
        (tmp_path / "d" / row.label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / row.label / f"{i}.txt").write_text(row.text)
    data = load_data(DataConfig(path=str(tmp_path / "d"), valid_pct=0.2, test_pct=0.2), tmp_path)
    assert len(data.train) + len(data.valid) + len(data.test) == 40


def test_splits_are_reproducible_and_max_train_stratified(tmp_path):
    big = make_reviews(200, seed=1)
    a = load_data(DataConfig(max_train=50), tmp_path, train=big)
    b = load_data(DataConfig(max_train=50), tmp_path, train=big)
    assert a.fingerprint() == b.fingerprint()
    assert len(a.train) + len(a.valid) == 50
    counts = pd.concat([a.train, a.valid]).label.value_counts()
    assert counts["pos"] == counts["neg"] == 25


def test_missing_column_lists_columns(tmp_path, df):
    with pytest.raises(DataError, match=r"column\(s\) \['review'\] not found; columns found: \['text', 'label'\]"):
        load_data(DataConfig(text_column="review"), tmp_path, train=df)


def test_single_class_and_unseen_label(tmp_path, df):
    with pytest.raises(DataError, match="only one class"):
        load_data(DataConfig(), tmp_path, train=df.assign(label="pos"))
    test = df.head(3).assign(label="meh")
    with pytest.raises(DataError, match=r"test: label\(s\) \['meh'\] do not occur in train"):
        load_data(DataConfig(), tmp_path, train=df, test=test)


def test_non_string_and_blank_texts(tmp_path, df):
    bad = df.astype(object)
    bad.loc[3, "text"] = None
    bad.loc[7, "text"] = 12
    bad.loc[9, "text"] = "   "
    with pytest.raises(DataError, match=r"2 row\(s\) have a missing or non-string text.*first rows: \[3, 7\]"):
        load_data(DataConfig(), tmp_path, train=bad)
    data = load_data(DataConfig(drop_invalid=True), tmp_path, train=bad)
    assert len(data.train) + len(data.valid) == 37


def test_mixed_label_types(tmp_path, df):
    mixed = df.copy().astype({"label": object})
    mixed.loc[0, "label"] = 1
    with pytest.raises(DataError, match="labels mix types"):
        load_data(DataConfig(), tmp_path, train=mixed)


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\ngood one,pos\nbad \xe9 one,neg\n")
    with pytest.raises(DataError, match=r"bad.csv, line 3: not valid UTF-8"):
        load_data(DataConfig(train=str(path)), tmp_path)


def test_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_data(DataConfig(), tmp_path, train=pd.DataFrame({"text": [], "label": []}))
    with pytest.raises(DataError, match="not found"):
        load_data(DataConfig(train=str(tmp_path / "nope.csv")), tmp_path)
    with pytest.raises(DataError, match="no training data"):
        load_data(DataConfig(), tmp_path)


def test_headerless_single_column_corpus(tmp_path):
    from ulmfit_lab.data.sources import read_corpus

    path = tmp_path / "wiki.csv"
    path.write_text('" = A = \n text one"\n" = B = \n text two"\n" = C = \n text three"\n', encoding="utf-8")
    docs = read_corpus([str(path)], DataConfig(), tmp_path)[str(path)]
    assert len(docs) == 3 and docs[0].startswith(" = A =")


def test_corpus_split_selector_keeps_test_out(tmp_path):
    from ulmfit_lab.data.sources import read_corpus

    root = tmp_path / "imdbish"
    for split, sub, text in [("train", "pos", "train pos"), ("train", "neg", "train neg"), ("test", "pos", "test pos"),
                             ("test", "neg", "test neg"), ("train", "unsup", "unlabelled review")]:
        (root / split / sub).mkdir(parents=True, exist_ok=True)
        (root / split / sub / "0.txt").write_text(text, encoding="utf-8")
    docs = read_corpus([f"{root}#unlabelled"], DataConfig(), tmp_path)
    assert docs == {f"{root}#unlabelled": ["unlabelled review"]}
    everything = read_corpus([str(root)], DataConfig(), tmp_path)[str(root)]
    assert sorted(everything) == ["train neg", "train pos", "unlabelled review"]  # test is never read by default
    with pytest.raises(DataError, match="unknown split"):
        read_corpus([f"{root}#unsup"], DataConfig(), tmp_path)


def test_hf_datasets_source_from_a_local_folder(tmp_path, df):
    # `hf:NAME` goes through datasets.load_dataset; a local folder of split files needs no network
    folder = tmp_path / "hf_local"
    folder.mkdir()
    df.to_csv(folder / "train.csv", index=False)
    df.head(10).to_csv(folder / "test.csv", index=False)
    data = load_data(DataConfig(path=f"hf:{folder}", valid_pct=0.25), tmp_path / "cache")
    assert len(data.train) + len(data.valid) == 40 and len(data.test) == 10


def test_hf_hub_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="Without network, pass a local path"):
        load_data(DataConfig(path="hf:no-such-user/no-such-dataset"), tmp_path)
