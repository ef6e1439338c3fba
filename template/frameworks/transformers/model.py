"""The model: the one module to rewrite for your own model; train.py and the server call only what is here.

Hugging Face Transformers: an encoder from the Hub (BASE_MODEL at BASE_MODEL_REVISION) fine-tuned for sequence
classification. Format: a `save_pretrained` folder (`model/`: config.json, model.safetensors, the tokenizer's JSON
files): tensors and JSON only, no pickle; metadata.json holds the sha256 of every file, checked before loading.
Inputs are texts: longer than MAX_SEQ_LENGTH tokens, they are truncated (the end is dropped). Each batch is padded
only to its own longest text (dynamic padding) and cut into model calls of at most MAX_TOKENS_PER_CALL tokens.
The server loads from the verified folder only, with HF_HUB_OFFLINE=1: it never reaches the Hub.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

FRAMEWORK = "transformers"
FRAMEWORK_VERSION = transformers.__version__
ARTIFACT = "model"  # a folder
PICKLE_BASED = False
INPUT = "text"  # rows are texts, not numbers

LABELS = [name.strip() for name in os.environ.get("TEXT_LABELS", "{{ text_labels }}").split(",")]
MAX_SEQ_LENGTH = int(os.environ.get("MAX_SEQ_LENGTH", "{{ max_seq_length }}"))
# bound on rows x padded length per forward pass: memory stays flat whatever the batch
MAX_TOKENS_PER_CALL = int(os.environ.get("MAX_TOKENS_PER_CALL", "8192"))
EPOCHS = int(os.environ.get("EPOCHS", "3"))
BATCH_SIZE = int(os.environ.get("TRAIN_BATCH_SIZE", "16"))

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)


def device() -> torch.device:
    if torch.cuda.is_available():
        log.info("transformers: running on cuda: %s (torch %s, CUDA %s)", torch.cuda.get_device_name(),
                 torch.__version__, torch.version.cuda)
        return torch.device("cuda")
    log.info("transformers: no GPU visible (torch %s), running on the CPU", torch.__version__)
    return torch.device("cpu")


class BaseModelError(Exception):
    """The base model cannot be used (not found, gated, offline, too short for MAX_SEQ_LENGTH); says what to do."""


USER_ERRORS = (BaseModelError,)  # train.py ends with their one line, not a traceback


@dataclass
class TextClassifier:
    net: Any
    tokenizer: Any
    base_model: str = ""
    base_revision: str = ""  # the commit the base model was resolved to


def base_source() -> tuple[str, str]:
    """(BASE_MODEL, BASE_MODEL_REVISION): a Hub id or a folder in the Hub's layout, and a branch, tag or commit."""
    return (os.environ.get("BASE_MODEL", "{{ base_model }}"),
            os.environ.get("BASE_MODEL_REVISION", "{{ base_model_revision }}"))


def resolve_revision(base: str, revision: str) -> str:
    """The commit hash a Hub revision points at (a folder has none: its revision is recorded as given). Offline
    (HF_HUB_OFFLINE=1), from the cache in HF_HOME, whose snapshot folders are named by their commits."""
    if Path(base).is_dir():
        return revision
    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        return Path(snapshot_download(base, revision=revision, local_files_only=True)).name
    return HfApi().model_info(base, revision=revision).sha or revision


def fit(texts: np.ndarray, target: np.ndarray, *, seed: int, n_jobs: int) -> TextClassifier:
    torch.set_num_threads(n_jobs)
    dev = device()
    base, revision = base_source()
    try:
        commit = resolve_revision(base, revision)
        tokenizer = AutoTokenizer.from_pretrained(base, revision=commit)
        net = AutoModelForSequenceClassification.from_pretrained(
            base, revision=commit, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
            label2id={name: i for i, name in enumerate(LABELS)}, use_safetensors=True,
        ).to(dev)
    except Exception as error:  # noqa: BLE001 (the Hub's and the loaders' errors alike: one line, what to do)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BaseModelError(
            f"base model {base} at revision {revision}: {first} (check BASE_MODEL and BASE_MODEL_REVISION; a gated "
            "model needs HF_TOKEN_FILE; a model without safetensors weights or without a network: use a folder)"
        ) from None
    if commit != revision:
        log.info("base model %s: revision %s is commit %s; pin it with BASE_MODEL_REVISION=%s",
                 base, revision, commit, commit)
    limit = getattr(net.config, "max_position_embeddings", MAX_SEQ_LENGTH)
    if MAX_SEQ_LENGTH > limit:
        raise BaseModelError(f"MAX_SEQ_LENGTH {MAX_SEQ_LENGTH} exceeds {base}'s {limit} positions: set it to {limit} "
                             "or less")
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-5)
    labels = torch.tensor(target, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(texts), generator=generator).split(BATCH_SIZE):
            encoded = tokenizer([str(t) for t in texts[batch.numpy()]], padding=True, truncation=True,
                                max_length=MAX_SEQ_LENGTH, return_tensors="pt").to(dev)
            optimizer.zero_grad()
            loss = net(**encoded, labels=labels[batch].to(dev)).loss
            loss.backward()
            optimizer.step()
    return TextClassifier(net.cpu().eval(), tokenizer, base, commit)


def save(model: TextClassifier, path: Path) -> None:
    """path: an empty folder; safetensors weights, config and the tokenizer's files."""
    model.net.save_pretrained(path, safe_serialization=True)
    model.tokenizer.save_pretrained(path)


def load(path: Path) -> TextClassifier:
    dev = device()
    # local_files_only: from this folder, never the Hub (HF_HUB_OFFLINE=1 in the serve image says the same)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    net = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True)
    return TextClassifier(net.to(dev).eval(), tokenizer)


def predict(model: TextClassifier, rows: np.ndarray) -> np.ndarray:
    """Class indices (0 .. n_classes-1)."""
    return predict_proba(model, rows).argmax(axis=1)


@torch.inference_mode()
def predict_proba(model: TextClassifier, rows: np.ndarray) -> np.ndarray:
    """Class probabilities per text. Sorted by length, then cut so that rows x padded length stays within
    MAX_TOKENS_PER_CALL: similar lengths share a call, and each call pads only to its own longest text."""
    texts = [str(t) for t in rows]
    ids = model.tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    out = np.zeros((len(texts), model.net.config.num_labels), dtype=np.float64)
    dev = next(model.net.parameters()).device
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and len(ids[order[end]]) * (end - start + 1) <= MAX_TOKENS_PER_CALL:
            end += 1
        chunk = order[start:end]
        batch = model.tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt").to(dev)
        logits = model.net(**batch).logits
        out[chunk] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        start = end
    return out
