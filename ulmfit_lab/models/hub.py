"""Pretrained LMs by name: shipped inside the package, a local folder or file, or a URL with a checksum.

`lm_pretrain.weights` takes any of:
- a registry name (`reviews-fwd`, `reviews-bwd`): an LM folder shipped in `ulmfit_lab/pretrained/`,
  checked against the sha256 recorded in its `model.json`; no network needed;
- a local LM folder (written by `ulmfit-lab lm`) or a fastai `.pth` (with `lm_pretrain.vocab`);
- an http(s)/file URL, downloaded once into the cache; `lm_pretrain.sha256` pins its content, and a
  `.tar.gz`/`.tgz`/`.tar.xz`/`.tar.bz2`/`.tar`/`.zip` is unpacked (an LM folder inside);
- `wt103-fwd` / `wt103-bwd` (`wt103`: the model's direction): fastai's published WikiText-103 AWD-LSTMs
  (`URLs.WT103_FWD` / `URLs.WT103_BWD`), the paper's LM, fetched once by fastai's own `untar_data` into fastai's
  cache (`~/.fastai/models/wt103-fwd`, or under `$FASTAI_HOME`), as `language_model_learner(pretrained=True)`
  does; `$ULMFIT_LAB_WT103_BASE_URL` names a mirror holding the two archives. A folder in that layout (one
  `.pth` + one itos `.pkl`, e.g. an unpacked copy) is accepted by path too. Vocab pickles are read by a
  restricted unpickler that builds a list of strings and runs no code (`models.read_vocab`).

`ship_lm` turns a trained LM folder into a shippable one: fp16 weights, sha256, and a model card.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import safetensors.torch as st

from ..fileio import (
    DownloadError,
    atomic_folder,
    atomic_path,
    extract_archive,
    fastai_untar,
    is_archive,
    sha256_file,
    write_json,
    write_text,
)
from .artifact import META, VOCAB, WEIGHTS, CheckpointError, read_checkpoint_meta

SHIPPED = Path(__file__).resolve().parent.parent / "pretrained"  # ulmfit_lab/pretrained


def available() -> dict[str, Path]:
    """Registry names of the LMs shipped with the package -> their folders."""
    if not SHIPPED.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED.iterdir())
            if (p / META).is_file() and not p.name.startswith(".")}  # not a folder being written


def verify(path: Path, expected: str | None, what: str) -> None:
    if expected and sha256_file(path) != expected.lower():
        raise CheckpointError(f"{what}: sha256 of {path} is {sha256_file(path)}, expected {expected}; the file is "
                              "corrupt or not the one pinned. Delete it and fetch it again")


def _is_name(spec: str) -> bool:
    return "://" not in spec and "/" not in spec and "\\" not in spec and not spec.startswith(".")


def fetch(spec: str, cache_dir: Path, sha256: str | None = None) -> Path:
    """A local path as is; an http(s)/file URL downloaded once into the cache (and unpacked if an archive)."""
    if "://" not in spec:
        path = Path(spec).expanduser()
        if not path.exists():
            raise CheckpointError(f"pretrained LM file not found: {path}; check lm_pretrain.weights/vocab")
        verify(path, sha256 if path.is_file() else None, "lm_pretrain.sha256")
        return path
    name = hashlib.sha256(spec.encode()).hexdigest()[:12] + "-" + spec.rstrip("/").rsplit("/", 1)[-1]
    dest = cache_dir / "downloads" / name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            try:
                urllib.request.urlretrieve(spec, tmp)
            except OSError as e:
                raise CheckpointError(f"could not download {spec}: {e}. Offline, download it elsewhere and "
                                      "give the local path") from None
            verify(tmp, sha256, f"download of {spec}")
    else:
        verify(dest, sha256, f"cached download of {spec}")
    return _unpack(dest) if is_archive(dest) else dest


def _unpack(path: Path) -> Path:
    out = extract_archive(path, path.with_name(path.name + ".d"))
    found = [p.parent for p in out.rglob(WEIGHTS)]
    if len(found) != 1:
        raise CheckpointError(f"{path}: expected one LM folder ({WEIGHTS} + {META} + {VOCAB}) "
                              f"inside the archive, found {len(found)}")
    return found[0]


def resolve_lm(spec: str, cache_dir: Path, sha256: str | None = None, backwards: bool = False) -> Path:
    """Where the pretrained LM named by `spec` lies on disk (see the module docstring).

    A fastai WT103 name gives the folder fastai unpacked (`.pth` + itos `.pkl`); `backwards` picks the
    direction of the bare name `wt103`.
    """
    shipped = available()
    if spec in shipped:
        folder = shipped[spec]
        meta, _ = read_checkpoint_meta(folder)
        verify(folder / WEIGHTS, meta.get("sha256"), f"shipped LM {spec!r}")
        return folder
    if spec == "wt103":
        spec = "wt103-bwd" if backwards else "wt103-fwd"
    if spec in FASTAI_LMS:
        return fetch_fastai_lm(spec, sha256)
    if _is_name(spec) and not Path(spec).exists():
        names = ", ".join([*shipped, *FASTAI_LMS]) or "none in this install"
        raise CheckpointError(f"no pretrained LM named {spec!r}; names: {names}. Give a registry name, "
                              "an LM folder, a fastai .pth (with lm_pretrain.vocab) or a URL")
    return fetch(spec, cache_dir, sha256)


def locate_lm(spec: str, vocab: str | None, cache_dir: Path, sha256: str | None = None,
              backwards: bool = False) -> dict[str, str]:
    """The files of the pretrained LM `spec` (with `vocab`, the itos of a fastai `.pth`), fetched if need be.

    Args:
        spec: `lm_pretrain.weights`: a name, an LM folder, a fastai-layout folder, a `.pth`/`.safetensors`
            file or a URL (see the module docstring).
        vocab: `lm_pretrain.vocab`: the itos (`.pkl` or JSON list) of a weights file, by path or URL; it
            overrides the `.pkl` of a fastai-layout folder.
        cache_dir: where URLs are downloaded (fastai's names go to fastai's cache).
        sha256: pins a download's content (for a fastai name: its archive).
        backwards: the direction of the model the LM is for; a named LM of the other direction is an error.

    Returns:
        `{"kind": "package" | "fastai", "weights": path, "vocab": path}`.

    Raises:
        CheckpointError: not found, not downloadable, of the other direction, or a folder of neither layout.
    """
    name = ("wt103-bwd" if backwards else "wt103-fwd") if spec == "wt103" else spec
    if name in FASTAI_LMS and name.endswith("-bwd") != backwards:
        other = name[:-3] + ("bwd" if backwards else "fwd")
        raise CheckpointError(f"{name} is a {'forward' if backwards else 'backward'} LM but the model reads "
                              f"{'backwards' if backwards else 'forwards'} (model.backwards / model.directions); "
                              f"use lm_pretrain.weights={other}, or wt103 to give each direction its own")
    weights = resolve_lm(name, cache_dir, sha256, backwards)
    if weights.is_dir():
        if (weights / WEIGHTS).is_file():
            return {"kind": "package", "weights": str(weights), "vocab": str(weights / VOCAB)}
        pth, pkl = fastai_lm_files(weights)
        return {"kind": "fastai", "weights": str(pth), "vocab": str(fetch(vocab, cache_dir) if vocab else pkl)}
    if not vocab:
        raise CheckpointError(f"lm_pretrain.vocab is needed with weights file {weights} "
                              "(fastai format: the itos .pkl or a JSON list)")
    return {"kind": "fastai", "weights": str(weights), "vocab": str(fetch(vocab, cache_dir))}


# ---------------------------------------------------------------- fastai's published WT103 LMs

FASTAI_LMS = {"wt103-fwd": "WT103_FWD", "wt103-bwd": "WT103_BWD"}  # name -> attribute of fastai's URLs
# another address holding wt103-fwd.tgz and wt103-bwd.tgz (a mirror; the tests' local server)
WT103_BASE_ENV = "ULMFIT_LAB_WT103_BASE_URL"


def fastai_lm_url(name: str) -> str:
    """fastai's archive of `name` (`URLs.WT103_FWD`/`_BWD`), or its copy under `$ULMFIT_LAB_WT103_BASE_URL`."""
    from fastai.data.external import URLs

    url = getattr(URLs, FASTAI_LMS[name])
    base = os.environ.get(WT103_BASE_ENV)
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if base else url


def fetch_fastai_lm(name: str, sha256: str | None = None, timeout_s: float = 30.0) -> Path:
    """Download and unpack fastai's LM `name` with fastai's `untar_data` into its `model` folder, once.

    Returns:
        The unpacked folder (fastai's layout: `lstm_fwd.pth` or `lstm_bwd.pth`, and `itos_wt103.pkl`).

    Raises:
        CheckpointError: the download failed (offline, say), in one line that says how to use a local copy;
            or the archive does not match `sha256`.
    """
    from fastai.data.external import fastai_path

    url = fastai_lm_url(name)
    archive = url.rsplit("/", 1)[-1]
    try:
        folder = fastai_untar(url, c_key="model", timeout_s=timeout_s)  # as language_model_learner(pretrained=True)
    except DownloadError as reason:
        raise CheckpointError(
            f"could not download {name} from {url} ({reason}); offline, copy {archive} from a connected machine "
            f"(or its ~/.fastai/models/{name} folder), unpack it and give lm_pretrain.weights=PATH/{name} (the "
            "folder with the .pth and itos_wt103.pkl), or lm_pretrain.weights=FILE.pth lm_pretrain.vocab=FILE.pkl"
        ) from None
    if sha256:  # fastai keeps no checksum of these archives: this pin is the only check of their content
        path = fastai_path("archive") / archive
        if not path.is_file():
            raise CheckpointError(f"lm_pretrain.sha256 is set but fastai's archive {path} is gone (only "
                                  f"{folder} is left); delete {folder} to download it again, or unset the pin")
        verify(path, sha256, f"fastai's {name}")
    return folder


def fastai_lm_files(folder: Path) -> tuple[Path, Path]:
    """The weights `.pth` and itos `.pkl` of a folder in fastai's layout (as `language_model_learner` globs)."""
    found = {ext: sorted(Path(folder).glob(f"*.{ext}")) for ext in ("pth", "pkl")}
    if [len(v) for v in found.values()] != [1, 1]:
        raise CheckpointError(
            f"{folder}: expected an LM folder ({WEIGHTS}, written by `ulmfit-lab lm`) or fastai's layout "
            f"(one .pth and one itos .pkl), found {len(found['pth'])} .pth and {len(found['pkl'])} .pkl; give "
            "lm_pretrain.weights=FILE.pth with lm_pretrain.vocab=FILE.pkl")
    return found["pth"][0], found["pkl"][0]


# ---------------------------------------------------------------- shipping an LM with its card


def ship_lm(src: Path, dest: Path, card: dict[str, Any]) -> Path:
    """Write `src` (an LM folder) to `dest` as fp16 safetensors + vocab + model.json (with sha256) + card.

    `card` holds what the model card reports: data and licenses, command, config, epochs, time, device,
    perplexities. It is stored in model.json (`card`) and rendered as `README.md`.
    """
    meta, vocab = read_checkpoint_meta(src)
    wgts = st.load_file(str(Path(src) / WEIGHTS))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in wgts.items()}
    dest = Path(dest)
    with atomic_folder(dest) as tmp:  # the shipped folder is replaced whole: never new weights beside an old card
        st.save_file(half, str(tmp / WEIGHTS))
        write_json(tmp / VOCAB, vocab)
        card = {**card, "params": card.get("params") or sum(v.numel() for v in wgts.values())}
        digest = sha256_file(tmp / WEIGHTS)  # both keys: the fp32 source's weights_sha256 no longer holds
        meta = {**meta, "dtype": "float16", "sha256": digest, "weights_sha256": digest, "card": card}
        write_json(tmp / META, meta)
        write_text(tmp / "README.md", render_card(dest.name, meta))
    return dest


def render_card(name: str, meta: dict[str, Any]) -> str:
    c = meta.get("card", {})
    m = meta.get("model", {})
    seen = f" ({c['tokens_seen'] / 1e6:.1f}M tokens seen)" if c.get("tokens_seen") else ""
    lines = [f"# {name}{seen}: AWD-LSTM language model ({'backward' if m.get('backwards') else 'forward'})", ""]
    lines += [f"- Architecture: fastai AWD-LSTM, emb {m.get('emb_sz')}, {m.get('n_layers')} layers of "
              f"{m.get('n_hid')}, bptt {m.get('bptt')}, tied embedding/decoder; {c.get('params', '?'):,} parameters; "
              f"weights stored as fp16 safetensors (sha256 `{meta.get('sha256')}`)."]
    for key, title in (("data", "Training data"), ("licenses", "Licenses"), ("command", "Command"),
                       ("training", "Training"), ("perplexity", "Perplexity"), ("notes", "Notes")):
        if key in c:
            lines += ["", f"## {title}", ""]
            val = c[key]
            if isinstance(val, dict):
                lines += [f"- {k}: {v}" for k, v in val.items()]
            elif isinstance(val, list):
                lines += [f"- {v}" for v in val]
            else:
                lines += [f"```\n{val}\n```" if key == "command" else str(val)]
    return "\n".join(lines) + "\n"


LICENSES = {
    "wikitext": "WikiText (Merity et al. 2016): CC BY-SA 3.0",
    "imdb": "IMDb reviews, aclImdb v1 (Maas et al. 2011): the dataset's terms (research use; cite the paper)",
}


def card_from_stage(stage_dir: Path, tokens_before: int = 0, notes: tuple[str, ...] = ()) -> dict[str, Any]:
    """A model card's facts, read from a finished `lm` stage folder of a run directory.

    Args:
        stage_dir: the `lm` stage folder (RUN_DIR/lm).
        tokens_before: tokens the LM had already seen when this stage started from it (`lm_pretrain.init`):
            a campaign of passes ships the tokens seen over all of them, which no single stage knows.
        notes: free lines for the card's Notes section (e.g. that the stage's seconds include pauses).
    """
    import yaml

    stage_dir = Path(stage_dir)
    done = json.loads((stage_dir / "DONE.json").read_text(encoding="utf-8"))["result"]
    rows = [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x]
    cfg = yaml.safe_load((stage_dir / "config.yaml").read_text(encoding="utf-8"))
    run_dir = stage_dir.parent
    cmd_file = run_dir / "command.txt"
    command = cmd_file.read_text(encoding="utf-8").strip() if cmd_file.exists() else ""
    corpus = cfg["lm_pretrain"]["corpus"] + cfg["lm_pretrain"].get("eval_corpus", [])
    m = done["metrics"]
    tokens_seen = int(tokens_before) + int(m.get("train_tokens") or 0) * len(rows)
    card = {
        "params": m.get("params", 0),
        "tokens_seen": tokens_seen,
        "data": {"corpus (trained on, minus held-out docs)": cfg["lm_pretrain"]["corpus"],
                 "held-out share per source": cfg["lm_pretrain"]["valid_pct"],
                 "extra evaluation": cfg["lm_pretrain"].get("eval_corpus", []),
                 "training tokens per epoch": m.get("train_tokens"), "vocab size": m.get("vocab_size")},
        "licenses": [text for key, text in LICENSES.items() if any(key in c.lower() for c in corpus)],
        "command": command,
        "training": {"tokens seen (all training, init included)": f"{tokens_seen:,}",
                     "started from": cfg["lm_pretrain"].get("init") or "random weights",
                     "tokens before this stage": f"{int(tokens_before):,}",
                     "epochs": len(rows), "seconds": round(sum(r.get("seconds", 0) for r in rows)),
                     "tokens/s per epoch": [r.get("train_tokens_per_s") for r in rows],
                     "device": m.get("device", "?"), "config": cfg},
        "perplexity": {k: round(v, 2) for k, v in m.get("perplexity", {}).items()},
    }
    if notes:
        card["notes"] = list(notes)
    return card
