"""Exporting trained networks: safetensors (weights + architecture), ONNX (dynamic size) and TorchScript.

- ``safetensors``: the unfolded weights (the training layout, loadable by ``load_model`` and fine-tunable) with the
  architecture in the metadata, ``{"nafrestore": json.dumps({"format_version": 1, "model_name", "model_args",
  "tlc_train_size", "config"})}``.
- ``onnx``: the folded inference path (see :mod:`~nafrestore.inference.fold`) with elementary-op LayerNorm, exported
  with ``torch.onnx.export(dynamo=True)`` and dynamic batch, height and width. Input ``input`` (N, C, H, W)
  float32 in [0, 1], output ``output`` of the same shape (not clamped). Any H and W work: the padding to a
  multiple of ``2**levels`` and the crop back are written with shape arithmetic, and TLC's local pooling gathers
  its windows from the integral image with index tensors, so the graph has no size-dependent control flow.
- ``torchscript``: the same module through ``torch.jit.script``, so H and W stay dynamic too. TorchScript is
  deprecated in PyTorch 2.x; prefer ONNX (or ``load_model`` in Python) for new deployments. Runs on CPU/CUDA
  with ``torch.jit.load``; no autocast inside the graph. The archive also carries the unfolded weights and the
  architecture as a safetensors blob in its extra files (``extra/nafrestore.safetensors``, the layout of the
  safetensors export), so ``load_model``/``--ckpt`` accept the file and read it without running its code. This
  roughly doubles the file size.

Every file is written to a temporary name in the destination folder and renamed when complete.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file
from torch import nn

from ..errors import NafrestoreError
from ..loading import TORCHSCRIPT_WEIGHTS_ENTRY, ModelSpec, load_spec
from ..models import NoiseGatedPair, in_channels
from ..models.gated import faded
from ..models.layers import QUIET_BLOCK, LocalAvgPool2d, SimplifiedChannelAttention, gate_weights, use_plain_ops
from ..models.nonlocal_means import NonLocalMeansBlend
from ..utils.files import atomic_path
from .fold import fold_for_inference

__all__ = ["EXPORT_FORMATS", "ExportableNet", "export_model", "exportable_module"]

EXPORT_FORMATS = ("onnx", "safetensors", "torchscript")


def _window_bounds(pos: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For positions 0..n-1 along one axis: the [lo, hi) rows of the integral image that TLC's window covers.

    LocalAvgPool2d takes the window mean at the ``n - k' + 1`` valid positions (``k' = min(k, n)``) and
    replicate-pads them back to n, i.e. position p uses the window starting at ``clamp(p - (k'-1)//2, 0, n-k')``.
    Computed with tensor ops so the graph has no shape-dependent branches or slices.
    """
    n = torch.ones_like(pos).sum()  # the axis length as a 0-d tensor (no shape arithmetic for the exporter)
    k_eff = n.clamp(max=k)
    start = (pos - (k_eff - 1) // 2).clamp(min=0)
    start = torch.minimum(start, n - k_eff)
    return start, start + k_eff, k_eff


class _ExportLocalPool(nn.Module):
    """LocalAvgPool2d with TLC (eval), written for export (ONNX and TorchScript): (B, C, H, W) -> same.

    The same window means as :class:`~nafrestore.models.layers.LocalAvgPool2d` for every input size (kernel
    ``min(k, size)``, replicate padding; the whole map when the kernel covers it), gathered from the integral
    image with index tensors instead of size-dependent slicing, so one graph serves every H and W.
    """

    def __init__(self, kernel_size: tuple[int, int]) -> None:
        super().__init__()
        self.kh, self.kw = int(kernel_size[0]), int(kernel_size[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), [1, 0, 1, 0])  # (B, C, H+1, W+1), s[i, j] = sum x[:i, :j]
        rows = torch.arange(x.shape[-2], device=x.device)
        cols = torch.arange(x.shape[-1], device=x.device)
        y0, y1, kh = _window_bounds(rows, self.kh)
        x0, x1, kw = _window_bounds(cols, self.kw)
        band = s.index_select(2, y1) - s.index_select(2, y0)  # (B, C, H, W+1)
        out = band.index_select(3, x1) - band.index_select(3, x0)  # (B, C, H, W)
        return out / (kh * kw).to(x.dtype)


class _GlobalPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class _SCA(nn.Module):
    """Scriptable SimplifiedChannelAttention: x * conv(pool(x)) (keeps the submodule names ``0`` and ``1``)."""

    def __init__(self, pool: nn.Module, conv: nn.Conv2d) -> None:
        super().__init__()
        self.pool, self.conv = pool, conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv(self.pool(x))


class ExportableNet(nn.Module):
    """A (folded) NAFNet / LKA-NAFNet whose forward pads and crops with shape arithmetic only (no branches).

    Shapes: (N, C, H, W) -> same, any H and W.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.intro, self.ending, self.residual_filter = net.intro, net.ending, net.residual_filter
        self.encoders, self.downs = net.encoders, net.downs
        self.middle_blks, self.ups, self.decoders = net.middle_blks, net.ups, net.decoders
        self.padder_size: int = int(net.padder_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        p = self.padder_size
        inp = F.pad(x, [0, (p - w % p) % p, 0, (p - h % p) % p])
        y = self.intro(inp)
        skips: list[torch.Tensor] = []
        for encoder, down in zip(self.encoders, self.downs):  # noqa: B905 - TorchScript has no strict=
            y = encoder(y)
            skips.append(y)
            y = down(y)
        y = self.middle_blks(y)
        n = len(skips)
        for i, (decoder, up) in enumerate(zip(self.decoders, self.ups)):  # noqa: B905
            y = decoder(up(y) + skips[n - 1 - i])
        return self.residual_filter(self.ending(y)[:, :, :h, :w], x) + x


class ExportablePair(nn.Module):
    """A noise-gated pair with both networks exportable: both always run and are blended by the gate (no branch)."""

    def __init__(self, pair: NoiseGatedPair) -> None:
        super().__init__()
        self.mild, self.strong = ExportableNet(pair.mild), ExportableNet(pair.strong)
        self.gate_low, self.gate_high, self.gate_estimate = pair.gate_low, pair.gate_high, pair.gate_estimate
        self.texture_fade = pair.texture_fade
        self.padder_size: int = int(pair.padder_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = gate_weights(x, self.gate_low, self.gate_high, self.gate_estimate).view(-1, 1, 1, 1).to(x.dtype)
        mild = self.mild(x) if self.texture_fade is None else faded(x, self.mild(x), self.texture_fade)
        return mild * (1 - w) + self.strong(x) * w


def exportable_module(spec: ModelSpec, *, tlc: bool | None = None) -> nn.Module:
    """The folded, plain-op, branch-free network of ``spec`` on the CPU, in eval mode."""
    net = fold_for_inference(spec.build(tlc), channels_last=False)
    use_plain_ops(net)

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, NonLocalMeansBlend):
                child.branchless = True  # the exported graph must not depend on the example image's noise level
            if isinstance(child, SimplifiedChannelAttention):
                pool = child[0]
                assert isinstance(pool, LocalAvgPool2d)
                new_pool = _GlobalPool() if pool.kernel_size is None else _ExportLocalPool(pool.kernel_size)
                setattr(parent, name, _SCA(new_pool, child[1]))
            else:
                replace(child)

    replace(net)
    # The folded model may carry a channels-last pre-hook; channels_last=False above means none was added.
    exportable = ExportablePair(net) if isinstance(net, NoiseGatedPair) else ExportableNet(net)
    return exportable.eval().requires_grad_(False)


def export_model(
    source: str | Path,
    output: str | Path,
    *,
    format: str,
    weights: str | Path | None = None,
    tlc: bool | None = None,
    opset: int = 18,
    check_size: int = 64,
) -> Path:
    """Export a trained network to ``output``.

    Args:
        source: a nafrestore checkpoint, run directory or safetensors export; or a config/preset with ``weights``.
        output: the file to write (folders are created).
        format: ``onnx``, ``safetensors`` or ``torchscript``.
        weights: the weights file when ``source`` is a config or preset.
        tlc: TLC on/off in the exported graph (None: the checkpoint's setting). For safetensors it sets the
            stored default.
        opset: ONNX opset version.
        check_size: side of the random image the exported ONNX/TorchScript model is checked against PyTorch with.

    Returns:
        ``output``.

    Raises:
        NafrestoreError: unknown format, missing optional packages, unreadable source, or export failure.
    """
    _check_format(format)  # before loading anything
    spec = load_spec(source, weights)
    if tlc is True and spec.tlc_train_size is None:
        spec.tlc_train_size = spec.tlc_size_hint
    elif tlc is False:
        spec.tlc_train_size = None
    return export_spec(spec, output, format=format, opset=opset, check_size=check_size)


def _check_format(format: str) -> None:
    if format not in EXPORT_FORMATS:
        raise NafrestoreError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {format!r}.")


def export_spec(spec: ModelSpec, output: str | Path, *, format: str, opset: int = 18, check_size: int = 64) -> Path:
    """Export the network ``spec`` describes to ``output`` (arguments as :func:`export_model`), written atomically."""
    _check_format(format)
    output = Path(output)
    with atomic_path(output) as tmp:
        try:
            if format == "safetensors":
                _export_safetensors(spec, tmp)
            elif format == "onnx":
                _export_onnx(spec, tmp, opset, check_size)
            else:
                _export_torchscript(spec, tmp, check_size)
        finally:
            for extra in tmp.parent.glob(f"{tmp.name}?*"):  # ONNX external-data side files, if any
                extra.unlink(missing_ok=True)
    return output


def _unfolded_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The spec's (training-layout) weights as contiguous CPU tensors, as safetensors stores them."""
    assert spec.state is not None
    return {k: v.detach().cpu().contiguous().clone() for k, v in spec.state.items()}


def _export_safetensors(spec: ModelSpec, path: Path) -> None:
    state = _unfolded_state(spec)
    spec.build()  # fail here, not at load time, when the weights do not fit the architecture
    save_file(state, str(path), metadata={"nafrestore": json.dumps(spec.metadata())})


def _reference(spec: ModelSpec, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return spec.build()(x)


def _export_onnx(spec: ModelSpec, path: Path, opset: int, check_size: int) -> None:
    try:  # here, not at the top: onnx and onnxscript are the optional extra nafrestore[export]
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise NafrestoreError(
            f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing): "
            f"pip install 'nafrestore[export]'."
        ) from None
    module = exportable_module(spec)
    channels = in_channels(module)
    # Batch 2: an example batch of 1 would specialise the batch dimension (0/1 specialisation).
    # At least one quiet block (layers.QUIET_BLOCK) on a side: a smaller example would specialise that estimate's
    # fallback for small images.
    side = max(2 * module.padder_size, QUIET_BLOCK)
    x = torch.rand(2, channels, side + 3, side + 5)
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    try:
        program = torch.onnx.export(
            module,
            (x,),
            dynamo=True,
            dynamic_shapes={"x": dims},
            input_names=["input"],
            output_names=["output"],
            opset_version=opset,
            verbose=False,
        )
        program.save(str(path))
    except Exception as exc:
        raise NafrestoreError(f"ONNX export failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
    _check_onnx(spec, path, channels, check_size)


def _check_onnx(spec: ModelSpec, path: Path, channels: int, size: int) -> None:
    """Run the file in onnxruntime (when installed) on an odd-sized image and compare with PyTorch."""
    try:  # here, not at the top: onnxruntime is the optional extra nafrestore[export]
        import onnxruntime as ort
    except ImportError:
        return
    x = torch.rand(1, channels, size + 3, size + 1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    _compare(spec, x, got, "ONNX")


def _compare(spec: ModelSpec, x: torch.Tensor, got: torch.Tensor, what: str) -> None:
    want = _reference(spec, x)
    err = (got - want).abs().max().item()
    if not err < 1e-3:
        raise NafrestoreError(f"The {what} export differs from the PyTorch model by {err:.2e} on a test image.")


def _export_torchscript(spec: ModelSpec, path: Path, check_size: int) -> None:
    module = exportable_module(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.x (see module doc)
        try:
            scripted = torch.jit.script(module)
        except Exception as exc:
            raise NafrestoreError(f"TorchScript export failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
        # The weights and architecture in the safetensors layout, so that read_checkpoint can rebuild the model
        # from the archive without torch.jit.load (which would run the archive's code).
        weights = save_safetensors(_unfolded_state(spec), metadata={"nafrestore": json.dumps(spec.metadata())})
        torch.jit.save(scripted, str(path), _extra_files={TORCHSCRIPT_WEIGHTS_ENTRY: weights})
        loaded = torch.jit.load(str(path))
    x = torch.rand(1, in_channels(module), check_size + 3, check_size + 1)
    with torch.inference_mode():
        got = loaded(x)
    _compare(spec, x, got, "TorchScript")
