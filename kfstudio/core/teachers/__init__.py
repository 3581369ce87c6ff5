"""Teachers: load any supported format, the shipped demo teachers, the .pt2 check, the output cache.

Importing the package registers every teacher loader, in the order they are tried: ``modules``
(a Python factory, the built-in demos) and ``files`` (TorchScript, torch.export, ONNX); the
registry itself is ``loaders``.
"""

from kfstudio.core.teachers import loaders, modules, files  # noqa: F401, I001  (they register themselves, in this order)
