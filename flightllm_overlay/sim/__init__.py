"""Simulated U280: functional simulator, device memory, pynq Device and metadata-only xclbin."""
