"""DistilBERT (no token types, no pooler)."""
from ..arch import AttnSpec, FFNSpec, Family, StackSpec, register_family

FAMILY = register_family(Family(
    model_types=("distilbert",),
    backbones=("distilbert",),
    stacks=(StackSpec(
        "encoder", "transformer.layer",
        (AttnSpec("self", "attention", q="attention.q_lin", k="attention.k_lin", v="attention.v_lin",
                  o="attention.out_lin", head_attrs=("n_heads",)),),
        FFNSpec(up=("ffn.lin1",), down="ffn.lin2", blocks=("ffn",)),
        count_keys=("n_layers",)),),
    word_embeddings="embeddings.word_embeddings",
    embeddings=("embeddings",),
    position_embeddings="embeddings.position_embeddings",
    heads=("pre_classifier", "classifier", "qa_outputs", "vocab_transform", "vocab_projector"),
))
