"""ONNX export of a zoo classifier, checked against PyTorch with onnxruntime.

The graph takes ``pixels`` (N, C, H, W) float32 in [0, 1] with a dynamic batch and returns ``logits``; the
normalisation is inside the graph because it is the model's first layer.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sclzoo.errors import ModelLoadError

__all__ = ["export_onnx", "export_onnx_checked", "onnx_providers", "onnx_session", "onnx_logits", "ONNX_TOLERANCE"]

ONNX_TOLERANCE = 1e-4
OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int, int]) -> Path:
    """Writes ``model`` (eval mode, CPU) as ONNX with a dynamic batch axis."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, *input_size)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deterministic and needs no extra packages; its deprecation
        # notice is not actionable for users.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (dummy,), str(p), input_names=["pixels"], output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    return p


def onnx_providers(device: torch.device | str, available: list[str], stream: int | None = None) -> list[Any]:
    """onnxruntime's providers for ``device``: on ``cuda:K`` the CUDA provider on GPU K (``cuda`` alone: PyTorch's
    current GPU), running on PyTorch's CUDA stream ``stream`` when given (so onnxruntime's work is ordered after
    PyTorch's without a host wait), then the CPU provider; on anything else, or without the CUDA provider in
    ``available`` (a warning then), the CPU provider alone."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        warnings.warn("onnxruntime has no CUDA provider (pip install 'sclzoo[gpu]'); running ONNX on the CPU",
                      stacklevel=3)
        return ["CPUExecutionProvider"]
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    options: dict[str, str] = {"device_id": str(index)}
    if stream is not None:
        options |= {"has_user_compute_stream": "1", "user_compute_stream": str(stream)}
    return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]


def onnx_session(path: str | Path, device: torch.device | str = "cpu", threads: int | None = None) -> Any:
    """An onnxruntime session on ``device``; on ``cuda:K`` the CUDA provider on GPU K when onnxruntime-gpu is
    installed (:func:`onnx_providers`), on PyTorch's current stream of that GPU.

    On the CPU it runs ``threads`` intra-op threads (default: PyTorch's ``torch.get_num_threads()``) that sleep
    instead of spinning between calls: the evaluator alternates onnxruntime forwards with PyTorch work, and
    spinning onnxruntime threads would take the cores PyTorch's threads need (measured in README.md, "Speed").
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    dev = torch.device(device)
    stream = None
    if dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        stream = torch.cuda.current_stream(dev).cuda_stream
    providers = onnx_providers(dev, ort.get_available_providers(), stream)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelLoadError(f"ONNX file {str(path)!r} cannot be loaded ({e}); re-export the repo with "
                             "`sclzoo export`") from None


def _cuda_device(session: Any) -> torch.device | None:
    """The GPU a session runs on (its first provider is CUDA's), else None."""
    if session.get_providers()[:1] != ["CUDAExecutionProvider"]:
        return None
    options = session.get_provider_options().get("CUDAExecutionProvider", {})
    return torch.device("cuda", int(options.get("device_id", 0)))


def onnx_logits(session: Any, images: Tensor, batch_size: int = 256) -> Tensor:
    """Runs (N, C, H, W) pixels through an onnxruntime session in batches. Returns (N, K) float32 logits on the
    images' device.

    A session on a GPU reads each chunk from and writes its logits to that GPU's memory (IO binding, on
    PyTorch's stream), so no chunk goes through host memory; images on another device are moved there first.
    """
    gpu = _cuda_device(session)
    if gpu is not None:
        return _onnx_logits_on_gpu(session, images, batch_size, gpu).to(images.device)
    outs = []
    for i in range(0, images.shape[0], batch_size):
        # No copy when the chunk is already a contiguous float32 CPU tensor (the usual case).
        xb = np.ascontiguousarray(images[i : i + batch_size].detach().cpu().numpy(), dtype=np.float32)
        outs.append(torch.from_numpy(session.run(["logits"], {"pixels": xb})[0]))
    return torch.cat(outs).to(images.device)


def _onnx_logits_on_gpu(session: Any, images: Tensor, batch_size: int, gpu: torch.device) -> Tensor:
    """:func:`onnx_logits` through IO binding on ``gpu``: inputs and outputs are PyTorch tensors there."""
    import onnxruntime as ort

    n_classes = session.get_outputs()[0].shape[1]
    if not isinstance(n_classes, int):
        raise ModelLoadError("the ONNX graph's logits have no fixed class count; re-export the repo with "
                             "`sclzoo export`, or use --runtime torch")
    run_options = ort.RunOptions()
    # the session runs on PyTorch's stream (onnx_session): PyTorch's later work waits for it in stream order
    run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    binding = session.io_binding()
    outs = []
    for i in range(0, images.shape[0], batch_size):
        xb = images[i : i + batch_size].detach().to(gpu, torch.float32).contiguous()
        out = torch.empty(xb.shape[0], n_classes, dtype=torch.float32, device=gpu)
        binding.bind_input("pixels", "cuda", gpu.index, np.float32, tuple(xb.shape), xb.data_ptr())
        binding.bind_output("logits", "cuda", gpu.index, np.float32, tuple(out.shape), out.data_ptr())
        session.run_with_iobinding(binding, run_options)
        outs.append(out)
    return torch.cat(outs)


def export_onnx_checked(model: nn.Module, path: str | Path, images: Tensor, labels: Tensor) -> dict[str, Any]:
    """Exports, then checks onnxruntime against PyTorch on real images.

    Raises:
        ModelLoadError: max |Δ logits| > 1e-4 or any argmax differs.

    Returns:
        The check record for training.json (max abs diff, argmax agreement, accuracies, timing).
    """
    model = model.eval().cpu()
    input_size = tuple(int(s) for s in images.shape[1:])
    t0 = time.time()
    export_onnx(model, path, input_size)  # type: ignore[arg-type]
    sess = onnx_session(path)
    ort_logits = onnx_logits(sess, images)
    with torch.no_grad():
        pt_logits = torch.cat([model(images[i : i + 500]) for i in range(0, len(images), 500)])
    max_diff = float((ort_logits - pt_logits).abs().max())
    same_argmax = bool((ort_logits.argmax(1) == pt_logits.argmax(1)).all())
    check = {
        "runtime": "onnxruntime", "opset": OPSET, "n_images": len(images), "max_abs_diff_logits": max_diff,
        "tolerance": ONNX_TOLERANCE, "argmax_identical": same_argmax,
        "accuracy_torch": float((pt_logits.argmax(1) == labels).float().mean()),
        "accuracy_onnx": float((ort_logits.argmax(1) == labels).float().mean()),
        "passed": max_diff <= ONNX_TOLERANCE and same_argmax, "seconds": round(time.time() - t0, 3),
    }
    if not check["passed"]:
        Path(path).unlink(missing_ok=True)
        raise ModelLoadError(f"ONNX export does not match PyTorch: max |Δ logits| = {max_diff:.3g} "
                             f"(tolerance {ONNX_TOLERANCE}), argmax identical = {same_argmax}")
    return check
