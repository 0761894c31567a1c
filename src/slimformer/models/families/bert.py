"""BERT family: BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT (one encoder stack, post-LayerNorm)."""
from ..arch import AttnSpec, FFNSpec, Family, StackSpec, register_family

FAMILY = register_family(Family(
    model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert", "roberta-prelayernorm"),
    backbones=("bert", "roberta", "electra", "camembert", "roberta_prelayernorm", "xlm_roberta"),
    stacks=(StackSpec(
        "encoder", "encoder.layer",
        (AttnSpec("self", "attention.self", q="attention.self.query", k="attention.self.key",
                  v="attention.self.value", o="attention.output.dense", block="attention",
                  head_attrs=("num_attention_heads",), width_attrs=("all_head_size",)),),
        FFNSpec(up=("intermediate.dense",), down="output.dense", blocks=("intermediate", "output")),
        count_keys=("num_hidden_layers",)),),
    word_embeddings="embeddings.word_embeddings",
    embeddings=("embeddings",),
    position_embeddings="embeddings.position_embeddings",
    token_type_embeddings="embeddings.token_type_embeddings",
    pooler="pooler",
    heads=("classifier", "cls", "lm_head", "qa_outputs", "discriminator_predictions"),
))
