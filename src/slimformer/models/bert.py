"""Adapter for the BERT family: BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT (same module layout)."""
from __future__ import annotations

from torch import nn

from ..errors import SlimformerError
from .adapters import Adapter, AttentionParts, FFNParts, register_adapter

_BACKBONES = ("bert", "roberta", "electra", "camembert", "roberta_prelayernorm", "xlm_roberta")


@register_adapter
class BertAdapter(Adapter):
    model_types = ("bert", "roberta", "xlm-roberta", "electra", "camembert", "roberta-prelayernorm")
    components = (
        (r"(^|\.)embeddings(\.|$)", "embeddings"),
        (r"LayerNorm", "layernorm"),
        (r"\.attention\.", "attention"),
        (r"\.attention$", "attention"),
        (r"\.(intermediate|output)(\.|$)", "ffn"),
        (r"(^|\.)(pooler|classifier|qa_outputs|cls|lm_head|discriminator_predictions)(\.|$)", "head"),
    )

    def backbone(self, model: nn.Module) -> nn.Module:
        if hasattr(model, "encoder") and hasattr(model, "embeddings"):
            return model
        for name in _BACKBONES:
            if hasattr(model, name):
                return getattr(model, name)
        raise SlimformerError(f"cannot find the encoder of {type(model).__name__}")

    def embeddings(self, model: nn.Module) -> nn.Module:
        return self.backbone(model).embeddings

    def word_embeddings(self, model: nn.Module) -> nn.Embedding:
        return self.embeddings(model).word_embeddings

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self.backbone(model).encoder.layer

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        self.backbone(model).encoder.layer = layers
        model.config.num_hidden_layers = len(layers)

    def attention(self, layer: nn.Module) -> AttentionParts:
        sa = layer.attention.self
        return AttentionParts(sa, sa.query, sa.key, sa.value, layer.attention.output.dense, sa.attention_head_size)

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        sa = layer.attention.self
        sa.num_attention_heads = n
        sa.all_head_size = n * sa.attention_head_size

    def ffn(self, layer: nn.Module) -> FFNParts:
        return FFNParts(layer.intermediate.dense, layer.output.dense)

    def attention_block(self, layer: nn.Module) -> nn.Module:
        return layer.attention

    def ffn_blocks(self, layer: nn.Module) -> list[nn.Module]:
        return [layer.intermediate, layer.output]

    def head_modules(self, model: nn.Module) -> list[str]:
        names = [n for n, _ in model.named_children() if n in ("classifier", "cls", "lm_head", "qa_outputs")]
        bb = self.backbone(model)
        if getattr(bb, "pooler", None) is not None and bb is not model:
            names.append(f"{[n for n, m in model.named_children() if m is bb][0]}.pooler")
        return names

    def token_type_embeddings(self, model: nn.Module) -> nn.Module | None:
        return getattr(self.embeddings(model), "token_type_embeddings", None)

    def set_token_type_embeddings(self, model: nn.Module, module: nn.Module) -> None:
        self.embeddings(model).token_type_embeddings = module

    def position_embeddings(self, model: nn.Module) -> nn.Embedding | None:
        return getattr(self.embeddings(model), "position_embeddings", None)

    def pooler(self, model: nn.Module) -> nn.Module | None:
        return getattr(self.backbone(model), "pooler", None)

    def set_pooler(self, model: nn.Module, module: nn.Module) -> None:
        self.backbone(model).pooler = module
