"""Bundled real models and data: the model zoo, datasets and the demo."""
