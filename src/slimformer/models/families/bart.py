"""BART-style encoder-decoders: BART, mBART, Marian (self- and cross-attention q/k/v/out_proj, FFN fc1/fc2)."""
from ..arch import AttnSpec, FFNSpec, Family, StackSpec, register_family


def _attn(kind: str, path: str) -> AttnSpec:
    return AttnSpec(kind, path, q=f"{path}.q_proj", k=f"{path}.k_proj", v=f"{path}.v_proj", o=f"{path}.out_proj",
                    head_attrs=("num_heads",))


_FFN = FFNSpec(up=("fc1",), down="fc2")

FAMILY = register_family(Family(
    model_types=("bart", "mbart", "marian"),
    backbones=("model",),
    stacks=(StackSpec("encoder", "encoder.layers", (_attn("self", "self_attn"),), _FFN, count_keys=("encoder_layers",),
                      ffn_keys=("encoder_ffn_dim",), head_keys=("encoder_attention_heads",)),
            StackSpec("decoder", "decoder.layers", (_attn("self", "self_attn"), _attn("cross", "encoder_attn")), _FFN,
                      count_keys=("decoder_layers",), ffn_keys=("decoder_ffn_dim",),
                      head_keys=("decoder_attention_heads",))),
    word_embeddings="shared",
    embeddings=("shared", "encoder.embed_tokens", "encoder.embed_positions", "decoder.embed_tokens",
                "decoder.embed_positions", "encoder.layernorm_embedding", "decoder.layernorm_embedding"),
    position_embeddings="encoder.embed_positions",
    heads=("lm_head", "classification_head", "qa_outputs"),
    width_keys=("d_model",),
))
