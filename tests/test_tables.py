"""One table reader for every command: training and prediction read the same rows from a file, and a bad
file is the same one-line error (exit code 2) whichever command reads it."""

import gzip
import re

import pandas as pd
import pytest
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import cli
from ulmfit_lab.config import DataConfig
from ulmfit_lab.data.sources import DataError, load_data, read_source
from ulmfit_lab.data.tables import iter_table, read_table

WORDS = ["NA", "null", "None", "nan", "N/A", "007"]  # texts that a reader may take for something else


def _write(df: pd.DataFrame, path) -> str:
    if path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif path.suffix == ".txt":
        path.write_text("".join(t + "\n" for t in df.text), encoding="utf-8")
    else:
        df.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return str(path)


def _reviews() -> pd.DataFrame:
    df = make_reviews(20, seed=3)
    for i, word in enumerate(WORDS):
        df.loc[2 * i, "text"] = word
    return df


def _predict_rows(path) -> list[str]:
    return pd.concat(list(iter_table(path, chunk_rows=4)))["text"].tolist()


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".txt"])
def test_training_and_predict_read_the_same_rows(tmp_path, ext):
    df = _reviews()
    path = _write(df, tmp_path / f"reviews{ext}")
    training = read_source(path, DataConfig(), tmp_path)["all"]["text"].tolist()
    assert training == _predict_rows(path) == df.text.tolist()


def test_a_review_that_reads_na_or_null_is_kept_by_training(tmp_path):
    df = _reviews()
    data = load_data(DataConfig(train=_write(df, tmp_path / "t.csv"), valid_pct=0.25), tmp_path)
    kept = pd.concat([data.train, data.valid])
    assert len(kept) == len(df) and set(WORDS) <= set(kept.text)
    assert all(isinstance(t, str) for t in kept.text)


def test_missing_texts_and_labels_are_still_reported(tmp_path):
    path = tmp_path / "t.csv"
    _write(_reviews(), path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = ",pos"  # an empty text cell
    lines[4] = lines[4].rsplit(",", 1)[0] + ","  # an empty label cell
    lines[6] = lines[6].rsplit(",", 1)[0] + ",NA"  # a label "NA": missing, as pandas reads a label column
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"3 row\(s\) have a missing or non-string text .*or a missing label "
                                        r"\(first rows: \[0, 3, 5\]"):
        load_data(DataConfig(train=str(path)), tmp_path)
    data = load_data(DataConfig(train=str(path), drop_invalid=True, valid_pct=0.25), tmp_path)
    assert len(data.train) + len(data.valid) == 17 and data.classes == ["neg", "pos"]
    with pytest.raises(DataError, match=r"1 row\(s\) of column 'text' hold no text .*first rows: \[0\]"):
        _predict_rows(path)


def test_txt_lines_split_the_same_everywhere(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffone\r\ntwo\x0cstill two\u2028and two\n\nNA\nnull\rsame line\nlast".encode())
    want = ["one", "two\x0cstill two\u2028and two", "", "NA", "null\rsame line", "last"]
    assert read_source(str(path), DataConfig(), tmp_path)["all"]["text"].tolist() == _predict_rows(path) == want
    gz = tmp_path / "t.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_table(gz)["text"].tolist() == _predict_rows(gz) == want


# ---------------------------------------------------------------- one error, every command


def _bad_file(kind: str, folder) -> str:
    path = folder / ("t.csv" if kind != "binary" else "t.parquet.csv")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "latin1":
        path.write_bytes("text,label\nfine,pos\ncaf\xe9 cr\xe8me,neg\n".encode("latin-1"))
    else:
        path.write_text("review,label\nfine,pos\ndull,neg\n", encoding="utf-8")
    return str(path)


ERRORS = {"empty": r"t\.csv: the file is empty \(no header, no rows\)",
          "binary": r"t\.parquet\.csv: looks like a binary file",
          "latin1": r"t\.csv, line 3: not valid UTF-8 \(byte 0xe9 at offset 23\); re-encode",
          "missing_column": r"t\.csv(\))?: column\(s\) \['text'\] not found; columns found: \['review', 'label'\]"}


def _command(name: str, data: str, tmp_path) -> list[str]:
    model = tmp_path / "model"  # never loaded: the input is read and checked first
    model.mkdir(exist_ok=True)
    (model / "model.json").write_text("{}")
    out = tmp_path / "out"
    return {"run": ["run", str(CONFIGS / "tiny.yaml"), f"data.train={data}", f"run.dir={out}",
                    f"run.cache_dir={tmp_path / 'cache'}"],
            "report": ["report", data, f"run.dir={out}", f"run.cache_dir={tmp_path / 'cache'}"],
            "predict": ["predict", str(model), data, "-o", str(out / "p.csv")],
            "suggest": ["suggest", str(model), data, "-o", str(out / "s.csv")],
            "interpret": ["interpret", str(model), "--data", data, "--out", str(out)]}[name]


@pytest.mark.parametrize("command", ["run", "report", "predict", "suggest", "interpret"])
def test_every_command_gives_one_line_for_a_bad_table(command, tmp_path, capsys):
    for kind, pattern in ERRORS.items():
        folder = tmp_path / kind
        folder.mkdir()
        capsys.readouterr()
        rc = cli.main(_command(command, _bad_file(kind, folder), folder))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("ulmfit-lab: error:")]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, f"{command} on {kind}: {err}"
        assert re.search(pattern, lines[0]), f"{command} on {kind}: {lines[0]}"
        assert not list((folder / "out").glob("*.csv"))  # nothing written
