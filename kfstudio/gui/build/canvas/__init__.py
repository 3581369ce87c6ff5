"""The canvas: scene (mirrors the brick graph), view (gestures, zoom), items (plate, bricks)."""
