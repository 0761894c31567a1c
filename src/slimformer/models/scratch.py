"""Models trained from a config, with a tokenizer trained on the task's own text (no pretrained weights needed).

Used for translation when no pretrained seq2seq model is at hand: a Marian encoder-decoder of a named size
(or `layers=3,d_model=256,ffn=1024,heads=4,vocab=8000`) and a shared source/target Unigram tokenizer
(SentencePiece-style, trained with the `tokenizers` library on the training split of both sides).
"""
from __future__ import annotations

from typing import Any

from ..errors import SlimformerError, check

SIZES: dict[str, dict[str, int]] = {
    "marian-tiny": {"layers": 3, "d_model": 256, "ffn": 1024, "heads": 4, "vocab": 8000},
    "marian-small": {"layers": 6, "d_model": 512, "ffn": 1024, "heads": 8, "vocab": 10000},  # PET's teacher
}
KEYS = ("layers", "encoder_layers", "decoder_layers", "d_model", "ffn", "heads", "vocab", "positions")


def parse_size(spec: str) -> dict[str, int]:
    """A named size, or comma-separated key=value pairs over KEYS (unset keys from marian-tiny)."""
    if spec in SIZES:
        return dict(SIZES[spec])
    out = dict(SIZES["marian-tiny"])
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        check(bool(sep) and key in KEYS, f"--from-config: expected a size name ({', '.join(SIZES)}) or "
              f"key=value pairs over {', '.join(KEYS)}; got {part!r}")
        try:
            out[key] = int(value)
        except ValueError as e:
            raise SlimformerError(f"--from-config: {key} must be an integer, got {value!r}") from e
        check(out[key] >= 1, f"--from-config: {key} must be >= 1")
    check(out["d_model"] % out["heads"] == 0, f"--from-config: d_model {out['d_model']} is not divisible by heads "
          f"{out['heads']}")
    check(out["vocab"] <= 256000 and out["d_model"] <= 8192 and out["ffn"] <= 65536 and out["layers"] <= 64,
          "--from-config: the size is beyond what slimformer trains from scratch (vocab <= 256k, d_model <= 8192)")
    return out


def train_tokenizer(texts: list[str], vocab: int) -> Any:
    """A shared Unigram tokenizer (NFKC, Metaspace), </s> appended to every sequence; pad 0, </s> 1, unk 2."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def translation_model(task: Any, spec: str, seed: int = 42) -> tuple[Any, Any]:
    """(MarianMTModel, tokenizer) of the given size, randomly initialised, tokenizer trained on task's train."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    check(task.kind == "translation", f"--from-config builds translation models; task {task.name} is {task.kind}")
    size = parse_size(spec)
    pairs = task.split("train")
    tok = train_tokenizer([p.text for p in pairs] + [p.target for p in pairs], size["vocab"])
    enc, dec = size.get("encoder_layers", size["layers"]), size.get("decoder_layers", size["layers"])
    cfg = MarianConfig(vocab_size=len(tok), d_model=size["d_model"], encoder_layers=enc, decoder_layers=dec,
                       encoder_attention_heads=size["heads"], decoder_attention_heads=size["heads"],
                       encoder_ffn_dim=size["ffn"], decoder_ffn_dim=size["ffn"],
                       max_position_embeddings=size.get("positions", 256), pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                       forced_eos_token_id=tok.eos_token_id, scale_embedding=True, dropout=0.1,
                       attention_dropout=0.0, activation_dropout=0.0, num_beams=5, max_length=128)
    torch.manual_seed(seed)
    model = MarianMTModel(cfg)
    model.generation_config.num_beams = task.beams
    return model, tok
