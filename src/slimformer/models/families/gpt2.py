"""GPT-2: fused q|k|v projection `c_attn` and Conv1D layers (weight [in, out])."""
from ..arch import AttnSpec, FFNSpec, Family, StackSpec, register_family

FAMILY = register_family(Family(
    model_types=("gpt2",),
    backbones=("transformer",),
    stacks=(StackSpec(
        "decoder", "h",
        (AttnSpec("self", "attn", qkv="attn.c_attn", o="attn.c_proj", head_attrs=("num_heads",),
                  width_attrs=("split_size",), norm="ln_1"),),
        FFNSpec(up=("mlp.c_fc",), down="mlp.c_proj", blocks=("mlp",), norm="ln_2"),
        count_keys=("n_layer",)),),
    word_embeddings="wte",
    embeddings=("wte", "wpe"),
    position_embeddings="wpe",
    heads=("lm_head", "score"),
))
