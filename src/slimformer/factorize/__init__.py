"""Low-rank factorization: truncated SVD of Linear layers and ALBERT-style factorized word embeddings."""
from .embeddings import FactorizedEmbedding, FactorizeEmbeddings, factorize_embeddings
from .lowrank import Factorize, LowRankLinear, choose_ranks, factorize_linears, select_layers

__all__ = ["Factorize", "FactorizeEmbeddings", "FactorizedEmbedding", "LowRankLinear", "choose_ranks",
           "factorize_embeddings", "factorize_linears", "select_layers"]
