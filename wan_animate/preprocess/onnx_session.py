"""onnxruntime sessions for the preprocessing models, run over batches of any size.

Exported detector and pose models come with either a fixed batch dimension (often 1) or a symbolic one; `OnnxModel`
reads the model's input shape and splits (and, for a fixed batch above 1, pads) the work accordingly.
onnxruntime keeps a session's memory (its weights and its CUDA arena of activations) until the session ends, so
`release` ends it once a preprocessing pass is over; the next `run` opens it again.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os

import numpy as np

GPU_INSTALL_HINT = "pip install onnxruntime-gpu (in place of onnxruntime)"
# Builds of onnxruntime: each installs the same `onnxruntime` module, so two of them overwrite each other's files.
RUNTIME_BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                  "onnxruntime-rocm", "onnxruntime-qnn")
_log = logging.getLogger("wan_animate")
_warned: set[tuple[str, ...]] = set()


def installed_runtime_builds() -> list[str]:
    """The onnxruntime builds (distributions) installed in this environment."""
    found = []
    for name in RUNTIME_BUILDS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def build_conflict(builds: list[str]) -> str | None:
    """What to do when several onnxruntime builds are installed together (None when there is at most one)."""
    if len(builds) < 2:
        return None
    keep = next((b for b in builds if b != "onnxruntime"), builds[0])
    return (f"{' and '.join(builds)} are installed together; they share one `onnxruntime` module, so whichever was "
            f"installed last wins (installing requirements again can bring the CPU build back over the GPU one). "
            f"Keep one: pip uninstall -y {' '.join(builds)} && pip install {keep}")


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("the pose preprocessing needs onnxruntime: pip install onnxruntime (CPU) or, for CUDA, "
                          "pip install onnxruntime-gpu (install only one of them)") from err
    return onnxruntime


def choose_providers(device: str = "auto") -> list[str]:
    """Execution providers for `device`: "auto" (CUDA when this onnxruntime has it, else CPU), "cuda" or "cpu"."""
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device: expected 'auto', 'cuda' or 'cpu'; got {device!r}")
    available = _onnxruntime().get_available_providers()
    builds = installed_runtime_builds()
    conflict = build_conflict(builds)
    if conflict and tuple(builds) not in _warned:
        _warned.add(tuple(builds))
        _log.warning("wan_animate: %s", conflict)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError(f"device 'cuda' asked for, but this onnxruntime only has {available}; "
                           + (conflict or f"install the GPU build: {GPU_INSTALL_HINT}"))
    return ["CPUExecutionProvider"]


def _model_load_errors(ort) -> tuple[type[Exception], ...]:
    """The onnxruntime exceptions of a file that is not a loadable model."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def _static_dim(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxModel:
    """One ONNX model with one image-like input [N, C, H, W]; `run` returns its first output for any N."""

    def __init__(self, onnx_path: str | os.PathLike, device: str = "auto", max_batch: int = 8):
        if not os.path.isfile(onnx_path):
            raise FileNotFoundError(f"ONNX model file not found: {onnx_path}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}")
        self.path = str(onnx_path)
        self._chosen_providers = choose_providers(device)
        self.session = self._open()
        self._providers = self.session.get_providers()
        model_input = self.session.get_inputs()[0]
        if len(model_input.shape) != 4:
            raise ValueError(f"{self.path}: expected a 4-D image input [N, C, H, W]; found {model_input.shape}")
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        self.output_shape = tuple(self.session.get_outputs()[0].shape)  # ints, or names / None where dynamic
        self.fixed_batch = _static_dim(model_input.shape[0])
        self.max_batch = max_batch
        height, width = (_static_dim(d) for d in model_input.shape[2:])
        self.input_hw = (height, width) if height and width else None

    def _open(self):
        ort = _onnxruntime()
        try:
            return ort.InferenceSession(self.path, providers=self._chosen_providers)
        except _model_load_errors(ort) as error:
            raise ValueError(f"{self.path} could not be read as an ONNX model (an incomplete download or not a "
                             f"model?): {error}") from error

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on."""
        return list(self._providers)

    def release(self) -> None:
        """End the session, giving back its device and host memory (onnxruntime's CUDA arena is only freed with the
        session); the next `run` opens it again."""
        self.session = None

    def _chunk_size(self) -> int:
        return self.fixed_batch or self.max_batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        """First output for `batch` [N, C, H, W] float32, computed in chunks the model accepts: [N, ...]."""
        if batch.ndim != 4:
            raise ValueError(f"{self.path}: input batch must be [N, C, H, W]; got shape {batch.shape}")
        if len(batch) == 0:
            raise ValueError(f"{self.path}: input batch is empty")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.session is None:
            self.session = self._open()
        step = self._chunk_size()
        outputs = []
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            real = len(chunk)
            if self.fixed_batch and real < self.fixed_batch:  # pad a fixed batch with copies of the last item
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - real, axis=0)])
            result = self.session.run([self.output_name], {self.input_name: chunk})[0]
            outputs.append(result[:real])
        return np.concatenate(outputs)

