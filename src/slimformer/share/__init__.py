"""Cross-layer parameter sharing (ALBERT style; PET's layer pairs in encoder-decoders) and ALBERT export."""
from .albert import to_albert, to_albert_model
from .layers import ShareLayers, make_groups, share_layers, sharing_groups
from .pet import SharePairs, pairings, pet_share, share_pairs

__all__ = ["ShareLayers", "make_groups", "share_layers", "sharing_groups", "to_albert", "to_albert_model",
           "SharePairs", "pairings", "pet_share", "share_pairs"]
