"""Teachers: load any supported format, the shipped demo teachers, the .pt2 check, the output cache."""
