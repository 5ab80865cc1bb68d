"""matminer's hand-crafted descriptors as hacknip descriptors (:mod:`hacknip.plugins.descriptor`)."""
