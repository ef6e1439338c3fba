"""A tiny BERT-like encoder in the Hub's folder layout, made by the tests (no Hub is reachable here): a WordPiece
tokenizer trained with `tokenizers` on a few sentences and a randomly initialised 2-layer encoder, saved with
`save_pretrained`. Made inside the render's own train image, which has transformers and tokenizers: the dev venv
needs neither."""

from __future__ import annotations

from pathlib import Path

from helpers.engine import run

MAKE = r'''
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

words = ("the a film service meal book hotel concert product trip show game was is great wonderful excellent lovely "
         "fantastic enjoyable superb terrible awful boring dreadful poor disappointing bad horrible dull what this "
         "i found honestly overall and would say so again").split()
sentences = [" ".join(words[i:i + 7]) for i in range(len(words))] * 3
tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
tokenizer.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
tokenizer.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                               sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
fast.save_pretrained("/out")
torch.manual_seed(0)
config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
BertModel(config).save_pretrained("/out", safe_serialization=True)
'''


def make_tiny_encoder(train_image: str, folder: Path) -> Path:
    """The tiny base model in folder (once per folder), made by train_image's Python."""
    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        run(["docker", "run", "--rm", "--network", "none", "-e", "HF_HUB_OFFLINE=1", "-e", "HF_HOME=/tmp/hf",
             "-v", f"{folder}:/out", train_image, "python", "-c", MAKE])
    return folder


def train_args(tiny: Path) -> list[str]:
    """docker run arguments that train from the tiny encoder, offline, for one epoch."""
    return ["-v", f"{tiny}:/base:ro", "-e", "BASE_MODEL=/base", "-e", "EPOCHS=1", "-e", "HF_HUB_OFFLINE=1",
            "--tmpfs", "/app/var/hf", "--network", "none"]
