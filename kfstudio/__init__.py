"""KF Studio: Knowledge Factorization made usable.

Factorize a pretrained teacher into one common-knowledge module plus one task brick per
task (Yang, Ye, Wang, ECCV 2022), then snap any set of bricks onto the common module into a
custom multi-task network, without fine-tuning.
"""

__version__ = "0.1.0"
