"""Adapter for DistilBERT (no token types, no pooler; attention q_lin/k_lin/v_lin/out_lin, FFN lin1/lin2)."""
from __future__ import annotations

from torch import nn

from .adapters import Adapter, AttentionParts, FFNParts, register_adapter


@register_adapter
class DistilBertAdapter(Adapter):
    model_types = ("distilbert",)
    components = (
        (r"(^|\.)embeddings\.(word|position)_embeddings", "embeddings"),
        (r"(LayerNorm|layer_norm)", "layernorm"),
        (r"\.attention(\.|$)", "attention"),
        (r"\.ffn(\.|$)", "ffn"),
        (r"(^|\.)(pre_classifier|classifier|qa_outputs|vocab_transform|vocab_projector)(\.|$)", "head"),
    )

    def backbone(self, model: nn.Module) -> nn.Module:
        return model.distilbert if hasattr(model, "distilbert") else model

    def embeddings(self, model: nn.Module) -> nn.Module:
        return self.backbone(model).embeddings

    def word_embeddings(self, model: nn.Module) -> nn.Embedding:
        return self.embeddings(model).word_embeddings

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self.backbone(model).transformer.layer

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        self.backbone(model).transformer.layer = layers
        self.backbone(model).transformer.n_layers = len(layers)
        model.config.n_layers = len(layers)

    def attention(self, layer: nn.Module) -> AttentionParts:
        a = layer.attention
        return AttentionParts(a, a.q_lin, a.k_lin, a.v_lin, a.out_lin, a.attention_head_size)

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        layer.attention.n_heads = n

    def ffn(self, layer: nn.Module) -> FFNParts:
        return FFNParts(layer.ffn.lin1, layer.ffn.lin2)

    def attention_block(self, layer: nn.Module) -> nn.Module:
        return layer.attention

    def ffn_blocks(self, layer: nn.Module) -> list[nn.Module]:
        return [layer.ffn]

    def head_modules(self, model: nn.Module) -> list[str]:
        return [n for n, _ in model.named_children() if n in ("pre_classifier", "classifier", "qa_outputs",
                                                                "vocab_transform", "vocab_projector")]
