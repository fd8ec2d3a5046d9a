"""Garbage collection: the BuildKit azblob cache and old images in registries."""
