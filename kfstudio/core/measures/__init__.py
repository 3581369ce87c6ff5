"""What is measured: accuracy and agreement, disentanglement, DEPARA relatedness, cost."""
