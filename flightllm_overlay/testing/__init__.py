"""Testing helpers for users of flightllm_overlay: the pytest plugin with simulated-overlay fixtures."""
