"""The notebooks, installed as flightllm_overlay.notebooks: `pynq get-notebooks flightllm` delivers them.

A package (not bare data) so that pynq's `pynq.notebooks` entry point can name it, in regular and
editable installs alike.  pynq calls `deliver_notebooks` below instead of its own: the same
delivery (pynqutils), without this file and Python's caches.
"""
import os
import shutil

__all__ = ["deliver_notebooks"]


def deliver_notebooks(device_name, src_path, dst_path, name, folder=False,
                      overlays_res_lookup=True):
    """pynqutils' delivery of the notebooks in `src_path`, then our package files removed."""
    from pynqutils.setup_utils import deliver_notebooks as deliver
    deliver(device_name, src_path, dst_path, name, folder=folder,
            overlays_res_lookup=overlays_res_lookup)
    where = os.path.join(dst_path, name) if folder else dst_path
    for leftover in ("__init__.py", "__pycache__"):
        path = os.path.join(where, leftover)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
