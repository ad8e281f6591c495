"""Models from other frameworks (Keras, ONNX, scikit-learn) as torch modules to explain."""
