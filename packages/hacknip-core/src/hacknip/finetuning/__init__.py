"""Fine-tuning a backbone end to end on a property (the paper's baseline for HackNIP): an MLP head on the mean-pooled
features of one layer of a trainable backbone (:mod:`hacknip.plugins.trainable`), trained with discriminative
learning rates, the best-validation checkpoint kept, every state saved as named tensors (safetensors, never pickle)."""
