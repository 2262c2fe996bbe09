"""Table 1 of the paper: the VGG16 split into O (blocks 1-2), C (blocks 3-5 + FCs) and the mirror AR."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deepobfuscator.config import preset
from deepobfuscator.data.index import AttributeSpec
from deepobfuscator.models import Obfuscator, VGGClassifier, build_classifier, build_obfuscator, build_reconstructor
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


def test_a_quantised_code_keeps_only_the_predicted_class_and_passes_gradients() -> None:
    from deepobfuscator.models.bottleneck import predicted_class_code
    code = torch.tensor([[2.0, -1.0, 0.5, -0.3], [-3.0, -2.0, -1.0, 0.7]], requires_grad=True)
    hard = predicted_class_code(code, (4, 2))  # one 4-class attribute (3 values), one binary (1 value)
    assert hard.tolist() == [[1.0, 0.0, 0.0, -1.0], [-1.0, -1.0, -1.0, 1.0]]  # class 0 / the last class; the signs
    near = predicted_class_code(code.detach() + 0.01, (4, 2))
    assert torch.equal(near, hard.detach())  # nearby codes of one class are sent alike
    hard.sum().backward()
    assert code.grad is not None and (code.grad != 0).all()  # straight through from the soft version


def test_a_quantised_code_needs_a_whole_head_and_classes_that_add_up() -> None:
    from deepobfuscator.models.bottleneck import build_run_obfuscator
    obf = build_run_obfuscator(0.125, True, 9, code=16, image_size=(32, 32), code_head="vgg", quantise=(10,))
    feats = obf.front(torch.rand(16, 3, 32, 32))
    sent = obf.bottleneck.eval().code_values(feats)  # deployed: each row the code of one of the 10 classes
    ones, rest = (sent == 1).sum(1), ((sent == 0) | (sent == 1)).all(1)
    assert sent.shape == (16, 9) and bool((((ones == 1) & rest) | (sent == -1).all(1)).all())
    assert not torch.equal(obf.bottleneck.train().code_values(feats), sent)  # training keeps the head's values
    for bad in ((4,), (1, 10)):
        with pytest.raises(ValueError, match="quantised code"):
            build_run_obfuscator(0.125, True, 9, code=16, image_size=(32, 32), code_head="vgg", quantise=bad)
    with pytest.raises(ValueError, match="quantised code"):  # the small head's values are not logits
        build_run_obfuscator(0.125, True, 1, code=16, image_size=(32, 32), code_head="mlp", quantise=(2,))
