"""Packaging for ekg_keras: filter pruning for Keras 3."""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent

setup(
    name="ekg_keras",
    version="0.1.0",
    description=(
        "Filter (structured) pruning for Keras 3: EKG, SFP, ASFP, FPGM, "
        "LFPC, NPPM and stage-wise pruning on one shared core."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ekg_keras", "ekg_keras.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.6,<4",
        "tensorflow>=2.16",
        "tensorflow-datasets",
        "absl-py",
        "numpy",
        # tf.summary needs it; TensorFlow 2.21 no longer installs it.
        "tensorboard",
        # The embedded data set (load_digits) ships inside scikit-learn.
        "scikit-learn",
    ],
    extras_require={
        # pytest-xdist: the suite runs on every core (python3 dev.py test);
        # keras-hub: its vision models are pruned by tests/test_prune_kerashub.py.
        # jax, torch: the backend-neutral tests (tests/backend_neutral) run
        # on KERAS_BACKEND=jax and torch too, on their CPU wheels (dev.py
        # adds the PyTorch CPU index when it answers: 190 MB, not CUDA's GBs).
        "test": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "keras-hub",
            "jax[cpu]",
            "torch",
        ],
        "plot": ["matplotlib"],
        # Runtimes and converters of `ekg_keras.export` beyond TensorFlow:
        # LiteRT's interpreter, ONNX (Keras converts with tf2onnx; float16
        # and int8 with onnxruntime's tools), OpenVINO (int8 with NNCF).
        "deploy": [
            "ai-edge-litert",
            "onnxruntime",
            "onnx",
            "tf2onnx",
            "openvino",
            "nncf",
        ],
        # The documentation site (`python3 dev.py docs`, mkdocs.yml).
        "docs": ["mkdocs", "mkdocs-material", "mkdocstrings[python]"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
