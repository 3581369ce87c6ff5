"""Teachers: load any supported format, the shipped demo teachers, the .pt2 check, the output cache.

Importing the package registers every teacher loader: ``loaders`` (the registry, Python
factories, the built-in demos) and ``files`` (TorchScript, torch.export, ONNX).
"""

from kfstudio.core.teachers import files, loaders  # noqa: F401  (they register themselves)
