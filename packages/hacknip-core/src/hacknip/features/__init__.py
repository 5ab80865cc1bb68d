"""Features: the feature store, featurisation, pooling, supercells, backbone expressions, and the scikit-learn Featurizer."""
