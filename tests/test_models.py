"""models/: every registry net runs forward and backward at its dataset's image size (CIFAR, 32 px; vit_timm
at 384 px). ViT-family nets run at --dimhead 64 here. vit_timm alone is built with a reduced depth (the
`depth` option; a full ViT-B/16 step at 384 px takes ~12 s on one shared core); its full-depth construction
is checked on the meta device."""
import pytest
import torch

import models

REDUCED_DEPTH = {"vit_timm": 1}


@pytest.mark.parametrize("name", list(models.MODELS))
def test_forward_backward(name):
    opts = {"depth": REDUCED_DEPTH[name]} if name in REDUCED_DEPTH else {}
    net = models.build_model(name, num_classes=7, image_size=32, patch=4, dimhead=64 if "vit" in name else 512,
                             **opts)
    size = models.input_size(name, 32)
    x = torch.randn(2, 3, size, size)
    out = net(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    if not name.startswith("cait"):  # CaiT's layer dropout may skip whole layers in one step
        assert all(g is not None for g in grads)
    assert sum(g is not None for g in grads) > len(grads) // 2
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


def test_names_are_case_insensitive_and_unknown_lists_choices():
    assert models.canonical_name("Swin") == "swin"
    with pytest.raises(ValueError, match="res18"):
        models.build_model("resnet9000", 10, 32)


def test_vit_timm_is_resized_to_384_and_full_depth_is_vit_base():
    assert models.input_size("vit_timm", 32) == 384
    with torch.device("meta"):
        net = models.build_model("vit_timm", 10, 32)
    assert len(net.blocks) == 12 and 85e6 < models.count_parameters(net) < 87e6


def test_authors_hyperparameters():
    with torch.device("meta"):
        vit = models.build_model("vit", 10, 32, dimhead=512)
        swin = models.build_model("swin", 100, 32, patch=4)
        res = models.build_model("res18", 10, 32)
    assert len(vit.transformer.layers) == 12 and vit.transformer.layers[0][0].heads == 16
    assert [len(s.blocks) for s in swin.layers] == [2, 2, 6, 2]
    assert swin.layers[3].input_resolution == (4, 4)  # downscaling (2, 2, 2, 1): 32 -> 16 -> 8 -> 4 -> 4
    assert res.conv1.kernel_size == (3, 3) and res.conv1.stride == (1, 1)


def test_pretrained_weights_load_except_head(tmp_path):
    src = models.build_model("res18_mini", 10, 32)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = models.build_model("res18_mini", 5, 32, pretrained=None)
    missing = models.load_pretrained(dst, str(tmp_path / "w.pt"), skip_prefixes=())
    assert missing == ["fc.bias", "fc.weight"]
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_resnet20_has_268k_prunable_weights_and_option_a_shortcuts():
    from models.resnet20 import ShortcutA
    net = models.build_model("resnet20", 10, 32, affine=False, bias=False)
    assert models.count_parameters(net) == 268_336  # non-affine BN and no bias: every parameter is a weight
    assert models.count_parameters(models.build_model("resnet20", 10, 32)) == 268_336 + 10 + 2 * 16 * 7 + 2 * 32 * 6 + 2 * 64 * 6
    x = torch.randn(2, 16, 8, 8)
    y = ShortcutA(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4) and torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)  # global pooling: any image size
