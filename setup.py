"""Packaging of flightllm_overlay: a PYNQ overlay, compiler and simulated U280 for FlightLLM-style LLM inference."""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
#: put at the top of site-packages; Python runs its `import` line at start-up (see the hook module)
PTH = "flightllm_overlay_pynq.pth"


#: the hook's module, copied from flightllm_overlay/pynq_startup_hook.py to the top of site-packages
#: (the .pth line must not import the package itself at every interpreter start)
HOOK = "_flightllm_overlay_pynq_hook.py"


class BuildWithPth(build_py):
    """build_py that also puts the start-up hook and its .pth beside the package (as setuptools'
    own .pth files)."""

    def run(self):
        super().run()
        lib = Path(self.build_lib)
        (lib / HOOK).write_text((HERE / "flightllm_overlay" / "pynq_startup_hook.py").read_text())
        (lib / PTH).write_text("import _flightllm_overlay_pynq_hook\n")

    def get_outputs(self, include_bytecode=True):
        lib = Path(self.build_lib)
        return [*super().get_outputs(include_bytecode), str(lib / HOOK), str(lib / PTH)]


setup(
    name="flightllm_overlay",
    version="0.1.0",
    description="FlightLLM-style LLM inference on FPGAs: PYNQ overlay, compiler, simulated Alveo U280",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    cmdclass={"build_py": BuildWithPth},
    # the notebooks live in notebooks/ in the repository and ship as flightllm_overlay.notebooks
    # (a package: see its __init__), which the pynq.notebooks entry point below names
    packages=[*find_packages(include=["flightllm_overlay", "flightllm_overlay.*"]),
              "flightllm_overlay.notebooks"],
    package_dir={"flightllm_overlay.notebooks": "notebooks"},
    include_package_data=True,
    package_data={
        "flightllm_overlay": [
            "targets/*.json",
            "bitstreams/*.xclbin",
            "bitstreams/flightllm.xclbin.d/*",
            "src/*",
            "sim/*.cpp",          # the simulator's native kernels, built on first use (sim/native.py)
            "src/csim_shim/*.h",
            "src/synth_shim/*.h",
            "src/rtl/*.v",
            "data/*.txt",
        ],
        "flightllm_overlay.notebooks": ["*.ipynb"],
    },
    install_requires=[
        "numpy>=1.24,<2",        # pynq 4.0.0 is built against the numpy 1 C API
        "setuptools<=80",        # run time: pynqutils imports pkg_resources, gone after 80
        "pynq==4.0.0",           # the drivers and pynq_plugin use 4.0.0's Device/Overlay/XclBin
        "torch>=2.2",            # the float reference and compression; any CPU build
        "safetensors>=0.4,<1",   # checkpoints and compressed models
        "tokenizers>=0.15,<1",   # Tokenizer.from_str / encode / decode, stable since 0.15
        "gguf>=0.19,<0.20",      # GGUFReader: its API changes between minor releases; 0.19 tested
        "jinja2>=3,<4",          # chat templates
        "tqdm>=4.60,<5",         # compile progress
        "matplotlib>=3.7,<4",    # bench --gantt and the plots of trace
        "platformdirs>=3,<5",    # the program cache's default folder, by platform conventions
    ],
    extras_require={
        "tests": ["pytest>=7", "hypothesis>=6", "transformers", "accelerate", "nbmake", "ipykernel",
                  "ipywidgets>=8,<9", "ipython>=8"],
        # widgets.StreamingDemo and the notebooks; `import flightllm_overlay.widgets` names it
        "notebooks": ["ipywidgets>=8,<9", "ipython>=8", "ipykernel", "jupyter"],
        # `flightllm sweep` on Ray; newer Ray's raylet gives up on a loaded machine when its
        # agents take over 15 s to start (ray-project/ray#65983): 2.40 is the tested release
        "sweep": ["ray>=2.10,<2.41"],
    },
    entry_points={
        "console_scripts": ["flightllm = flightllm_overlay.cli:main"],
        "pynq.overlays": ["flightllm = flightllm_overlay.bitstreams"],
        "pynq.lib": ["flightllm = flightllm_overlay.overlay.drivers"],
        "pynq.notebooks": ["flightllm = flightllm_overlay.notebooks"],
        # the fixtures in every pytest run; named as the module so a conftest may also list it
        "pytest11": ["flightllm_overlay.testing.pytest_plugin = "
                     "flightllm_overlay.testing.pytest_plugin"],
    },
)
