"""The decoders' fused upsampling (a 2x nearest upsampling into a 3x3 convolution run as one stride-2 transposed
convolution) computes the same function, with the same gradients, as the layers written out; sizes that do not
double run as written."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepobfuscator.models import build_reconstructor
from deepobfuscator.models.reconstructors import (
    MIN_FUSED_CHANNELS, UpsampleSequential, nearest_up2_conv, plain_upsampling,
)


@pytest.mark.parametrize("bias", [True, False])
def test_nearest_up2_conv_is_upsample_then_conv(bias: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    out = nearest_up2_conv(x, w, b)
    assert out.shape == (3, 4, 12, 14)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    inputs = [t for t in (x, w, b) if t is not None]
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _outputs_and_grads(model: nn.Module, x: torch.Tensor, plain: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    if plain:
        with plain_upsampling():
            out = model(x)
    else:
        out = model(x)
    out.square().mean().backward()
    return out.detach(), [p.grad.detach().clone() for p in model.parameters()]


def _upsample_calls(model: nn.Module) -> list[int]:
    calls = [0]
    for module in model.modules():
        if isinstance(module, nn.Upsample):
            module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("name", ["mirror", "urec1", "urec2", "resrec"])
@pytest.mark.parametrize("feature_hw,image_size,fused_upsamplings", [
    ((8, 8), (32, 32), 2),       # both upsamplings double: both fused
    ((7, 5), (30, 22), 1),       # 7x5 -> 15x11 does not double, 15x11 -> 30x22 does
    ((6, 6), (27, 27), 0),       # 6x6 -> 13x13 -> 27x27: neither doubles: the layers run as written
])
def test_decoders_fused_equal_written_out(name: str, feature_hw: tuple[int, int], image_size: tuple[int, int],
                                          fused_upsamplings: int) -> None:
    torch.manual_seed(0)
    model = build_reconstructor(name, MIN_FUSED_CHANNELS, feature_hw, image_size, width=0.125).double().train()
    x = torch.randn(4, MIN_FUSED_CHANNELS, *feature_hw, dtype=torch.float64)
    calls = _upsample_calls(model)
    ref, ref_grads = _outputs_and_grads(model, x, plain=True)
    written_out = calls[0]
    out, grads = _outputs_and_grads(model, x, plain=False)
    assert out.shape == (4, 3, *image_size)
    assert written_out - (calls[0] - written_out) == fused_upsamplings  # the fused path skipped that many
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_fused_sequential_keeps_the_plain_state_dict() -> None:
    """Fitted decoders saved before the fusion load into the fused modules and back."""
    c = MIN_FUSED_CHANNELS
    layers = [nn.Upsample(size=(8, 8), mode="nearest"), nn.Conv2d(c, 3, 3, padding=1), nn.ReLU()]
    plain, fused = nn.Sequential(*layers), UpsampleSequential(*layers)
    assert list(plain.state_dict()) == list(fused.state_dict())
    x = torch.randn(1, c, 4, 4)
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)


def test_other_layers_after_an_upsampling_run_as_written() -> None:
    """A strided, dilated or 1x1 convolution after the upsampling is not the fused pattern, and a 3x3 one with fewer
    input channels than MIN_FUSED_CHANNELS runs as written (faster that way)."""
    torch.manual_seed(0)
    c = MIN_FUSED_CHANNELS
    for conv in (nn.Conv2d(c, 3, 3, padding=2, dilation=2), nn.Conv2d(c, 3, 1), nn.Conv2d(c, 3, 3, stride=2, padding=1),
                 nn.ConvTranspose2d(c, 3, 3, stride=2, padding=1, output_padding=1), nn.Conv2d(c - 1, 3, 3, padding=1)):
        seq = UpsampleSequential(nn.Upsample(scale_factor=2, mode="nearest"), conv).double()
        x = torch.randn(2, conv.in_channels, 5, 5, dtype=torch.float64)
        calls = _upsample_calls(seq)
        with torch.no_grad():
            out = seq(x)
            assert calls[0] == 1
            torch.testing.assert_close(out, conv(F.interpolate(x, scale_factor=2, mode="nearest")))
