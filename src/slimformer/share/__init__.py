"""Cross-layer parameter sharing (ALBERT style) and export of shared BERT models as stock ALBERT."""
from .albert import to_albert, to_albert_model
from .layers import ShareLayers, make_groups, share_layers, sharing_groups

__all__ = ["ShareLayers", "make_groups", "share_layers", "sharing_groups", "to_albert", "to_albert_model"]
