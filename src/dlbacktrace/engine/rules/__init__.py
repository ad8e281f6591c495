"""Relevance rules, one module per op family; ``registry`` maps ATen ops to them."""
