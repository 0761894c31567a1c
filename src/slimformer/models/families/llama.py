"""Llama-style decoders: Llama, SmolLM2, TinyLlama, Mistral, Qwen2 (GQA, SwiGLU gate/up/down, RMSNorm)."""
from ..arch import AttnSpec, FFNSpec, Family, StackSpec, register_family

FAMILY = register_family(Family(
    model_types=("llama", "mistral", "qwen2"),
    backbones=("model",),
    stacks=(StackSpec(
        "decoder", "layers",
        (AttnSpec("self", "self_attn", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                  o="self_attn.o_proj", norm="input_layernorm"),),
        FFNSpec(up=("mlp.gate_proj", "mlp.up_proj"), down="mlp.down_proj", blocks=("mlp",),
                norm="post_attention_layernorm", linear_up="mlp.up_proj"),
        count_keys=("num_hidden_layers",)),),
    word_embeddings="embed_tokens",
    heads=("lm_head", "score"),
))
