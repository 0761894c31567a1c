"""Structured and unstructured pruning."""
