"""The live plots of a run: the loss terms (loss), per-task accuracy (accuracy, accuracy_band), and what they share (base, axes)."""
