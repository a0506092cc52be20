"""Compression of a float checkpoint into the device's formats: smoothing, pruning, mixed precision."""
