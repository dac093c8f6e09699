"""Transformer and MLP nets: the ViT family and CaiT from vit-pytorch, Swin-T / MLP-Mixer / ViT-B/16 from timm,
each configured to the hyperparameters of the authors' train.py."""
import warnings

import torch.nn as nn


def _vit_kwargs(num_classes, image_size, patch, dimhead, depth, heads, mlp_dim):
    return dict(image_size=image_size, patch_size=patch, num_classes=num_classes, dim=dimhead, depth=depth,
                heads=heads, mlp_dim=mlp_dim)


def vit(num_classes, image_size, patch=4, dimhead=512, depth=12, **_):
    from vit_pytorch.vit import ViT
    return ViT(**_vit_kwargs(num_classes, image_size, patch, dimhead, depth, 16, 1024),
               dropout=0.1, emb_dropout=0.1)


def vit_large(num_classes, image_size, patch=4, dimhead=512, depth=24, **_):
    from vit_pytorch.vit import ViT
    return ViT(**_vit_kwargs(num_classes, image_size, patch, dimhead, depth, 16, 4096),
               dropout=0.1, emb_dropout=0.1)


def vit_small(num_classes, image_size, patch=4, dimhead=512, depth=6, **_):
    """ViT for small datasets (shifted patch tokens + locality self-attention), as the authors' vit_small."""
    from vit_pytorch.vit_for_small_dataset import ViT
    return ViT(**_vit_kwargs(num_classes, image_size, patch, dimhead, depth, 8, 512),
               dropout=0.1, emb_dropout=0.1)


def vit_tiny(num_classes, image_size, patch=4, dimhead=512, depth=4, **_):
    from vit_pytorch.vit_for_small_dataset import ViT
    return ViT(**_vit_kwargs(num_classes, image_size, patch, dimhead, depth, 6, 256),
               dropout=0.1, emb_dropout=0.1)


def simplevit(num_classes, image_size, patch=4, dimhead=512, depth=6, **_):
    from vit_pytorch.simple_vit import SimpleViT
    return SimpleViT(**_vit_kwargs(num_classes, image_size, patch, dimhead, depth, 8, 512))


def _cait(num_classes, image_size, patch, dimhead, depth, heads, mlp_dim):
    from vit_pytorch.cait import CaiT
    return CaiT(**_vit_kwargs(num_classes, image_size, patch, dimhead, depth, heads, mlp_dim), cls_depth=2,
                dropout=0.1, emb_dropout=0.1, layer_dropout=0.05)


def cait(num_classes, image_size, patch=4, dimhead=512, depth=6, **_):
    return _cait(num_classes, image_size, patch, dimhead, depth, 8, 512)


def cait_small(num_classes, image_size, patch=4, dimhead=512, depth=6, **_):
    return _cait(num_classes, image_size, patch, dimhead, depth, 6, 256)


def _swin(num_classes, image_size, window, embed_dim, depths, heads):
    """timm Swin with patch-embedding stride 2 and downscaling (2, 2, 2, 1): stages at 1/2, 1/4, 1/8, 1/8.

    timm always halves the resolution between stages; for the last stage (factor 1) its patch merging is
    replaced by a per-token linear map to twice the width, which is what a factor-1 merging computes.
    """
    from timm.models.swin_transformer import SwinTransformer, SwinTransformerStage
    net = SwinTransformer(img_size=image_size, patch_size=2, in_chans=3, num_classes=num_classes,
                          embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window)
    last = len(depths) - 1
    dim, res = embed_dim * 2 ** last, image_size // 2 // 2 ** (last - 1)
    stage = SwinTransformerStage(dim=dim, out_dim=dim, input_resolution=(res, res), depth=depths[last],
                                 downsample=False, num_heads=heads[last], window_size=window)
    stage.downsample = nn.Sequential(nn.LayerNorm(dim // 2), nn.Linear(dim // 2, dim, bias=False))
    net.layers[last] = stage
    return net


def swin(num_classes, image_size, patch=4, **_):
    """Swin-T (embed 96, depths 2-2-6-2, heads 3-6-12-24), window = --patch."""
    return _swin(num_classes, image_size, patch, 96, (2, 2, 6, 2), (3, 6, 12, 24))


def swin_mini(num_classes, image_size, patch=4, **_):
    """A quarter-width, shallower Swin (embed 32, depths 2-2-2-2, heads 1-2-4-8) for CPU-scale runs."""
    return _swin(num_classes, image_size, patch, 32, (2, 2, 2, 2), (1, 2, 4, 8))


def mlpmixer(num_classes, image_size, patch=4, **_):
    """MLP-Mixer, dim 512, depth 6; token MLP 4 x patches wide, channel MLP 0.5 x dim (the authors' copy)."""
    from timm.models.mlp_mixer import MlpMixer
    patches = (image_size // patch) ** 2
    return MlpMixer(num_classes=num_classes, img_size=image_size, patch_size=patch, num_blocks=6,
                    embed_dim=512, mlp_ratio=(4 * patches / 512, 0.5))


def vit_timm(num_classes, image_size, pretrained=None, depth=12, **_):
    """timm vit_base_patch16_384 with a new head; weights from a local file (no model hub here)."""
    import timm
    net = timm.create_model("vit_base_patch16_384", pretrained=False, num_classes=num_classes, depth=depth)
    if pretrained:
        from models import load_pretrained
        load_pretrained(net, pretrained)
    else:
        warnings.warn("vit_timm: no --pretrained weights given, training from random initialisation")
    return net
