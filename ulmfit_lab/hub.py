"""Pretrained LMs by name: shipped inside the package, a local folder or file, or a URL with a checksum.

`lm_pretrain.weights` takes any of:
- a registry name (`reviews-fwd`, `reviews-bwd`): an LM folder shipped in `ulmfit_lab/pretrained/`,
  checked against the sha256 recorded in its `model.json`; no network needed;
- a local LM folder (written by `ulmfit-lab lm`) or a fastai `.pth` (with `lm_pretrain.vocab`);
- an http(s)/file URL, downloaded once into the cache; `lm_pretrain.sha256` pins its content, and a
  `.tar.gz`/`.tgz`/`.zip` is unpacked (an LM folder inside).

`ship_lm` turns a trained LM folder into a shippable one: fp16 weights, sha256, and a model card.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import safetensors.torch as st

from .fileio import atomic_folder, atomic_path, extract_archive, sha256_file, write_json, write_text
from .models import CheckpointError, read_checkpoint_meta

SHIPPED = Path(__file__).resolve().parent / "pretrained"


def available() -> dict[str, Path]:
    """Registry names of the LMs shipped with the package -> their folders."""
    if not SHIPPED.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED.iterdir())
            if (p / "model.json").is_file() and not p.name.startswith(".")}  # not a folder being written


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
    return _unpack(dest) if _archive(dest) else dest


def _archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar", ".zip"))


def _unpack(path: Path) -> Path:
    out = extract_archive(path, path.with_name(path.name + ".d"))
    found = [p.parent for p in out.rglob("model.safetensors")]
    if len(found) != 1:
        raise CheckpointError(f"{path}: expected one LM folder (model.safetensors + model.json + vocab.json) "
                              f"inside the archive, found {len(found)}")
    return found[0]


def resolve_lm(spec: str, cache_dir: Path, sha256: str | None = None) -> Path:
    """Where the pretrained LM named by `spec` lies on disk (see the module docstring)."""
    shipped = available()
    if spec in shipped:
        folder = shipped[spec]
        meta, _ = read_checkpoint_meta(folder)
        verify(folder / "model.safetensors", meta.get("sha256"), f"shipped LM {spec!r}")
        return folder
    if _is_name(spec) and not Path(spec).exists():
        names = ", ".join(shipped) or "none in this install"
        raise CheckpointError(f"no pretrained LM named {spec!r}; shipped names: {names}. Give a registry name, "
                              "an LM folder, a fastai .pth (with lm_pretrain.vocab) or a URL")
    return fetch(spec, cache_dir, sha256)


# ---------------------------------------------------------------- shipping an LM with its card


def ship_lm(src: Path, dest: Path, card: dict[str, Any]) -> Path:
    """Write `src` (an LM folder) to `dest` as fp16 safetensors + vocab + model.json (with sha256) + card.

    `card` holds what the model card reports: data and licenses, command, config, epochs, time, device,
    perplexities. It is stored in model.json (`card`) and rendered as `README.md`.
    """
    meta, vocab = read_checkpoint_meta(src)
    wgts = st.load_file(str(Path(src) / "model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in wgts.items()}
    dest = Path(dest)
    with atomic_folder(dest) as tmp:  # the shipped folder is replaced whole: never new weights beside an old card
        st.save_file(half, str(tmp / "model.safetensors"))
        write_json(tmp / "vocab.json", vocab)
        card = {**card, "params": card.get("params") or sum(v.numel() for v in wgts.values())}
        digest = sha256_file(tmp / "model.safetensors")  # both keys: the fp32 source's weights_sha256 no longer holds
        meta = {**meta, "dtype": "float16", "sha256": digest, "weights_sha256": digest, "card": card}
        write_json(tmp / "model.json", meta)
        write_text(tmp / "README.md", render_card(dest.name, meta))
    return dest


def render_card(name: str, meta: dict[str, Any]) -> str:
    c = meta.get("card", {})
    m = meta.get("model", {})
    lines = [f"# {name}: AWD-LSTM language model ({'backward' if m.get('backwards') else 'forward'})", ""]
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


def card_from_stage(stage_dir: Path) -> dict[str, Any]:
    """A model card's facts, read from a finished `lm` stage folder of a run directory."""
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
    return {
        "params": m.get("params", 0),
        "data": {"corpus (trained on, minus held-out docs)": cfg["lm_pretrain"]["corpus"],
                 "held-out share per source": cfg["lm_pretrain"]["valid_pct"],
                 "extra evaluation": cfg["lm_pretrain"].get("eval_corpus", []),
                 "training tokens per epoch": m.get("train_tokens"), "vocab size": m.get("vocab_size")},
        "licenses": [text for key, text in LICENSES.items() if any(key in c.lower() for c in corpus)],
        "command": command,
        "training": {"epochs": len(rows), "seconds": round(sum(r.get("seconds", 0) for r in rows)),
                     "tokens/s per epoch": [r.get("train_tokens_per_s") for r in rows],
                     "device": m.get("device", "?"), "config": cfg},
        "perplexity": {k: round(v, 2) for k, v in m.get("perplexity", {}).items()},
    }
