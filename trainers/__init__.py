"""Command-line trainers: `cifar.py` and `imagenet.py`, and their shared parts.

The scripts parse absl flags and call the library; the modules here hold
what both share (strategies, flags, data sources, the staged run) once.
"""
