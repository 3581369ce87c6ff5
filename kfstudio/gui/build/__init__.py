"""The Build page: palette, canvas, cost panel, try-it, relations, undo and export."""
