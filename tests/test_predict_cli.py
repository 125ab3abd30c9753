"""`ulmfit-lab predict` on every input format, streamed in small chunks: input columns kept, one row per input
row in order, the same probabilities as the Python API."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from synth import make_reviews

from ulmfit_lab.data.sources import DataError
from ulmfit_lab.serving.batch import predict_file
from ulmfit_lab.serving.predict import Predictor


@pytest.fixture(scope="module")
def frame():
    df = make_reviews(12, seed=31, n_sent=2)
    df["id"] = np.arange(100, 112)
    df.loc[4, "text"] = " ".join(["The ending was superb."] * 80)  # longer than max_len
    return df


@pytest.fixture(scope="module")
def expected(tiny_run, frame):
    return Predictor.load(tiny_run["dir"], precision="fp32").predict_proba(frame.text)


def _write(df: pd.DataFrame, path):
    ext = path.suffix
    if ext == ".parquet":
        df.to_parquet(path, index=False)
    elif ext == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif ext == ".txt":
        path.write_text("\n".join(df.text) + "\n", encoding="utf-8")
    else:
        df.to_csv(path, index=False, sep="\t" if ext == ".tsv" else ",")


def _read(path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


@pytest.mark.parametrize("src,dst", [(".csv", ".parquet"), (".tsv", ".jsonl"), (".jsonl", ".csv"),
                                     (".parquet", ".tsv"), (".txt", ".csv")])
def test_predict_file_formats(tiny_run, frame, expected, tmp_path, src, dst):
    inp, out = tmp_path / f"in{src}", tmp_path / f"out{dst}"
    _write(frame, inp)
    n = predict_file(tiny_run["dir"], inp, out, chunk_rows=3, progress=False, precision="fp32")
    got = _read(out)
    assert n == len(frame) == len(got)
    assert got.text.tolist() == frame.text.tolist()
    if src != ".txt":
        assert got.id.tolist() == frame.id.tolist() and got.label.tolist() == frame.label.tolist()
    np.testing.assert_allclose(got[["proba_neg", "proba_pos"]].to_numpy(), expected, atol=1e-6)
    assert got.prediction.tolist() == np.array(["neg", "pos"])[expected.argmax(1)].tolist()
    assert not list(tmp_path.glob(".*.tmp"))


def test_predict_cli_streams_to_stdout_and_reports_errors(tiny_run, frame, tmp_path):
    inp = tmp_path / "in.jsonl"
    frame.rename(columns={"text": "review"}).to_json(inp, orient="records", lines=True)
    proc = run_cli("predict", str(tiny_run["dir"]), str(inp), "--text-column", "review", "--chunk-rows", "4",
                   "--no-progress")
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split(",")[-3:] == ["prediction", "proba_neg", "proba_pos"] and len(lines) == len(frame) + 1
    bad = run_cli("predict", str(tiny_run["dir"]), str(inp), check=False)
    assert bad.returncode == 2 and "column(s) ['text'] not found" in bad.stderr and "--text-column" in bad.stderr
    holes = tmp_path / "holes.csv"
    frame.assign(text=[None if i == 6 else t for i, t in enumerate(frame.text)]).to_csv(holes, index=False)
    with pytest.raises(DataError, match=r"1 row\(s\) of column .text. hold no text .* \[6\]"):
        predict_file(tiny_run["dir"], holes, tmp_path / "o.csv", chunk_rows=4, progress=False)
    assert not (tmp_path / "o.csv").exists()


def test_bf16_cli_predictions_agree(tiny_run, frame, expected, tmp_path):
    inp = tmp_path / "in.csv"
    frame.to_csv(inp, index=False)
    run_cli("predict", str(tiny_run["dir"]), str(inp), "-o", str(tmp_path / "o.jsonl"), "--precision", "bf16")
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows) == len(frame)
    assert np.abs(np.array([[r["proba_neg"], r["proba_pos"]] for r in rows]) - expected).max() < 0.05
