"""Wan2.2-Animate library: model, loading, runtime, sampling, pipeline and preprocessing, without ComfyUI."""

__version__ = "0.1.0"
