"""The Factorize page and what runs a factorization: settings, run bar, plots, worker, wizards."""
