"""Tiny random-config models of every registered family, built in the test (no downloads)."""
from __future__ import annotations

import torch

VOCAB = 30522  # the packaged MiniLM WordPiece tokenizer is used for every family in the tests


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    """A small random model of `family` with its usual task head (classifier, LM head or seq2seq head)."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    if family == "bert":
        cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            num_labels=3, vocab_size=VOCAB)
        return tf.BertForSequenceClassification(cfg).eval()
    if family == "distilbert":
        cfg = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64,
                                  dropout=0.0, attention_dropout=0.0, num_labels=3, vocab_size=VOCAB)
        return tf.DistilBertForSequenceClassification(cfg).eval()
    if family in ("bart", "marian"):
        cls = tf.BartConfig if family == "bart" else tf.MarianConfig
        cfg = cls(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
                  dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, decoder_start_token_id=0,
                  forced_eos_token_id=None, **common)
        model_cls = tf.BartForConditionalGeneration if family == "bart" else tf.MarianMTModel
        return model_cls(cfg).eval()
    if family == "t5":
        cfg = tf.T5Config(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
                          relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
                          decoder_start_token_id=0, vocab_size=VOCAB, pad_token_id=0, eos_token_id=102)
        return tf.T5ForConditionalGeneration(cfg).eval()
    if family == "llama":
        cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, **common)
        return tf.LlamaForCausalLM(cfg).eval()
    if family == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=48, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, **common)
        return tf.GPT2LMHeadModel(cfg).eval()
    raise ValueError(family)


FAMILIES = ["bert", "distilbert", "bart", "marian", "t5", "llama", "gpt2"]


def inputs(model: torch.nn.Module, batch: int = 2, seq: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch with one padded row (and decoder inputs for an encoder-decoder)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if model.config.is_encoder_decoder:
        out["decoder_input_ids"] = torch.randint(1000, 2000, (batch, seq - 3), generator=g)
    return out


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits
