"""Packaging of flightllm_overlay: a PYNQ overlay, compiler and simulated U280 for FlightLLM-style LLM inference."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="flightllm_overlay",
    version="0.1.0",
    description="FlightLLM-style LLM inference on FPGAs: PYNQ overlay, compiler, simulated Alveo U280",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["flightllm_overlay", "flightllm_overlay.*"]),
    include_package_data=True,
    package_data={
        "flightllm_overlay": [
            "targets/*.json",
            "bitstreams/*.xclbin",
            "bitstreams/flightllm.xclbin.d/*",
            "src/*",
            "src/rtl/*.v",
            "data/*.txt",
        ],
    },
    install_requires=[
        "numpy<2",
        "setuptools<=80",
        "pynq==4.0.0",
        "torch>=2.2",
        "safetensors",
        "tokenizers",
        "gguf",
        "jinja2",
        "tqdm",
    ],
    extras_require={
        "tests": ["pytest", "hypothesis", "transformers", "accelerate", "nbmake", "ipykernel",
                  "ipywidgets", "matplotlib"],
        "notebooks": ["ipywidgets", "matplotlib", "ipykernel", "jupyter"],
        "sweep": ["ray[default]>=2.9", "matplotlib"],
    },
    entry_points={
        "console_scripts": ["flightllm = flightllm_overlay.cli:main"],
        "pynq.overlays": ["flightllm = flightllm_overlay.bitstreams"],
        "pynq.lib": ["flightllm = flightllm_overlay.overlay.drivers"],
    },
)
