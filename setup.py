"""Megatron-LTD: 3D-parallel GPT/BERT pretraining with random-LTD on megatron-core."""

from setuptools import find_namespace_packages, setup

setup(
    name="megatron-ltd",
    version="0.1.0",
    description="Random and layerwise token dropping (random-LTD) for megatron-core pretraining",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # `megatron` is a namespace package shared with megatron-core (which owns megatron.core):
    # there is deliberately no megatron/__init__.py here.
    packages=find_namespace_packages(include=["megatron.*"], exclude=["megatron.core*"]),
    install_requires=[
        "megatron-core==0.16.1",
        # A range, not a pin: a GPU machine keeps the torch it has. The setup script installs
        # the CPU build (2.13.0) first on machines without torch.
        "torch>=2.4",
        "numpy",
        "pybind11",
        "packaging",
        # megatron-core's dist_checkpointing forks writer processes that need psutil; without it they
        # die and the save waits forever.
        "psutil",
        "sentencepiece",
        "tokenizers",
        "tensorboard",
        "tqdm",
        "matplotlib",
    ],
    # Ranges here say what works; constraints.txt pins the exact versions CI and the setup
    # script install (every package below and everything it pulls in, torch excepted).
    extras_require={
        # lm-eval is optional at run time; the tests exercise its adapter, so CI installs it.
        "test": ["pytest>=7", "pytest-timeout", "lm-eval>=0.4,<0.5"],
        "eval": ["lm-eval>=0.4,<0.5"],
        # Export to the Hugging Face format (its test runs in CI: the setup script installs it).
        "hf": ["transformers", "safetensors"],
    },
)
