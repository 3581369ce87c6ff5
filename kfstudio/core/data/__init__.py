"""Data sources: built-in sets, image folders, .npz files, streaming shards.

The registry and the in-memory sources live in ``sources``; importing this package registers the
plug-in sources too (``streaming``: shard folders and data too big for memory; ``shapes_hard``), so
every caller that reads ``kfstudio.core.data.sources`` sees all of them.
"""

from kfstudio.core.data import shapes, shapes_hard, sources, streaming  # noqa: F401  (they register themselves)
