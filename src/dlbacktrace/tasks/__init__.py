"""Modality and model-family knowledge: seeds and helpers for text classifiers and LLMs."""
