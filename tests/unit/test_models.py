"""Table 1 of the paper: the VGG16 split into O (blocks 1-2), C (blocks 3-5 + FCs) and the mirror AR."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deepobfuscator.config import preset
from deepobfuscator.data.index import AttributeSpec
from deepobfuscator.models import Obfuscator, VGGClassifier, build_classifier, build_obfuscator, build_reconstructor
from deepobfuscator.models.bottleneck import NoisyBottleneck, build_run_obfuscator
from deepobfuscator.training.modules import build_modules, feature_shape


def _convs(module: nn.Module, kind: type = nn.Conv2d) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, kind)]


@pytest.fixture(scope="module")
def paper_modules() -> dict[str, nn.Module]:
    """O, C and AR at width 1.0 for a 218x178 CelebA image (eval mode, built once)."""
    torch.manual_seed(0)
    obf = build_obfuscator(1.0)
    ch, hw = obf.out_channels, obf.feature_hw((218, 178))
    clf = build_classifier("vgg", ch, hw, 1, width=1.0)
    rec = build_reconstructor("mirror", ch, hw, (218, 178), width=1.0)
    for m in (obf, clf, rec):
        m.eval()
    return {"O": obf, "C": clf, "AR": rec}


def test_paper_obfuscator_output_is_128x54x44(paper_modules: dict[str, nn.Module]) -> None:
    with torch.no_grad():
        feats = paper_modules["O"](torch.rand(1, 3, 218, 178))
    assert tuple(feats.shape) == (1, 128, 54, 44)
    assert Obfuscator.feature_hw((218, 178)) == (54, 44)
    assert _convs(paper_modules["O"]) == [64, 64, 128, 128]
    assert sum(isinstance(m, nn.MaxPool2d) for m in paper_modules["O"].modules()) == 2


def test_paper_classifier_layers_and_output(paper_modules: dict[str, nn.Module]) -> None:
    clf = paper_modules["C"]
    assert _convs(clf) == [256] * 3 + [512] * 6
    linears = [m for m in clf.modules() if isinstance(m, nn.Linear)]
    # 54x44 -> 27x22 -> 13x11 -> 6x5 after the three pools of blocks 3-5
    assert [(m.in_features, m.out_features) for m in linears] == [(512 * 6 * 5, 4096), (4096, 4096), (4096, 1)]
    with torch.no_grad():
        out = clf(torch.rand(1, 128, 54, 44))
    assert tuple(out.shape) == (1, 1)


def test_paper_reconstructor_mirrors_obfuscator(paper_modules: dict[str, nn.Module]) -> None:
    rec = paper_modules["AR"]
    assert _convs(rec, nn.ConvTranspose2d) == [128, 64, 64, 3]
    with torch.no_grad():
        img = rec(torch.rand(1, 128, 54, 44))
    assert tuple(img.shape) == (1, 3, 218, 178)  # floor-halvings undone exactly, odd sizes included
    assert img.min() >= 0.0 and img.max() <= 1.0


@pytest.mark.parametrize("width,channels", [(0.25, 32), (0.125, 16)])
@pytest.mark.parametrize("size", [(64, 64), (218, 178)])
def test_scaled_widths(width: float, channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    obf = build_obfuscator(width)
    hw = obf.feature_hw(size)
    clf = build_classifier("vgg", obf.out_channels, hw, 3, width=width, fc_width=16)
    rec = build_reconstructor("mirror", obf.out_channels, hw, size, width=width)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        feats = obf.eval()(x)
        assert tuple(feats.shape) == (2, channels, size[0] // 4, size[1] // 4)
        assert obf.out_channels == channels
        assert tuple(clf.eval()(feats).shape) == (2, 3)
        assert tuple(rec.eval()(feats).shape) == (2, 3, *size)
    assert _convs(obf) == [round(c * width) for c in (64, 64, 128, 128)]


def test_multiclass_outputs_and_too_small_input() -> None:
    clf = VGGClassifier(16, (16, 16), num_outputs=10, width=0.125, fc_width=8)
    assert tuple(clf.eval()(torch.rand(1, 16, 16, 16)).shape) == (1, 10)
    with pytest.raises(ValueError, match="too small"):
        VGGClassifier(16, (4, 4), num_outputs=1, width=0.125)


def test_obfuscator_normalises_inside() -> None:
    """O takes [0, 1] images: an ImageNet-mean image is zero after normalisation."""
    obf = build_obfuscator(0.125)
    mean = obf.mean.view(1, 3, 1, 1).expand(1, 3, 8, 8)
    first = obf.features[0][0]
    with torch.no_grad():
        out = first((mean - obf.mean) / obf.std)
    assert torch.allclose(out, torch.zeros_like(out))  # no conv bias with batch norm: zero in, zero out
    assert "mean" in obf.state_dict() and "std" in obf.state_dict()


def test_build_modules_matches_config_and_is_seeded() -> None:
    cfg = preset("celeba-cpu")
    specs = [AttributeSpec("Smiling")], [AttributeSpec("Male"), AttributeSpec("Young")]
    assert feature_shape(cfg) == (32, 16, 16)
    cfg.model.fc_width = 32  # keep the check cheap
    a, b = build_modules(cfg, *specs), build_modules(cfg, *specs)
    c = build_modules(cfg, *specs, seed=1)
    for (_, ma), (_, mb), (_, mc) in zip(a.items(), b.items(), c.items()):
        pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (ma, mb, mc))
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    with torch.no_grad():
        feats = a.obfuscator.eval()(torch.rand(2, 3, 64, 64))
        assert tuple(a.adversary.eval()(feats).shape) == (2, 2)  # one logit per binary private attribute
        assert tuple(a.classifier.eval()(feats).shape) == (2, 1)


def _prediction_bottleneck(classes: tuple[int, ...], channels: int) -> NoisyBottleneck:
    return NoisyBottleneck(8, channels, norm="none", sigma=1.0, code=4, sent_hw=(2, 2), prediction=classes).eval()


def test_the_sent_prediction_is_the_centroid_of_the_class_c_reads_and_c_decodes_it() -> None:
    """A 3-class and a binary intended attribute read linearly from a 2-value code: each code is replaced by the mean of
    the training codes whose read-out predicts its class combination; C's read-out of every centroid is that
    combination, so C's decision on what is sent equals its decision on the code itself."""
    from deepobfuscator.models.bottleneck import class_onehots, combination_index
    bn = _prediction_bottleneck((3, 2), 2)
    readout = nn.Linear(2, 4)  # logits: 3 for the 3-class attribute, 1 for the binary one
    with torch.no_grad():
        readout.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
        readout.bias.copy_(torch.tensor([0.0, 0.0, 0.5, 0.0]))
    codes = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) * 2
    stats = bn.calibrate_prediction(readout, codes)
    assert stats["combinations"] == 6 and stats["seen"] == 6 and stats["decoded_as_their_own"] == 6
    index = combination_index(class_onehots(readout(codes), (3, 2)), (3, 2))
    for combo in range(6):
        assert torch.allclose(bn.centroids[combo], codes[index == combo].mean(0), atol=1e-5)
    sent = bn.sent_code(codes)
    assert torch.allclose(sent, bn.centroids[index])
    assert torch.equal(combination_index(class_onehots(readout(sent), (3, 2)), (3, 2)), index)
    assert torch.equal(bn.train().sent_code(codes), codes)  # training keeps the code


def test_an_unseen_combination_gets_the_overall_centroid_and_the_readout_must_fit() -> None:
    bn = _prediction_bottleneck((2, 2), 2)
    readout = nn.Linear(2, 2)
    with torch.no_grad():
        readout.weight.copy_(torch.eye(2))
        readout.bias.zero_()
    codes = torch.tensor([[1.0, 1.0], [2.0, 3.0], [-1.0, 1.0], [1.0, -1.0]])  # no code with both logits negative
    stats = bn.calibrate_prediction(readout, codes)
    assert stats["seen"] == 3 and torch.allclose(bn.centroids[0], codes.mean(0))
    assert torch.allclose(bn.centroids[3], torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="read-out maps 3 values to 2 logits"):
        bn.calibrate_prediction(nn.Linear(3, 2), codes)
    with pytest.raises(ValueError, match="needs a code"):
        build_run_obfuscator(0.125, True, 1, image_size=(32, 32), prediction=(2,))
