"""Keep pytest from collecting the cocotb testbench here: it runs inside the simulator (tests/test_csd_rtl.py)."""
collect_ignore_glob = ["test_*_cocotb.py"]
