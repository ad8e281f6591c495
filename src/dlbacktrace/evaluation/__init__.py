"""Baseline methods, faithfulness/stability metrics and the benchmark that compares them."""
