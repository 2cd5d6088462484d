"""A tiny randomly initialized open_clip CLIP (no weights to download) for the ost tests."""
import logging

import open_clip
import torch

logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that no pretrained weights were loaded

VISION = dict(image_size=32, layers=2, width=64, patch_size=8, head_width=32)
TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)


def tiny_clip(seed: int = 0, embed_dim: int = 32):
    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32", pretrained=None, embed_dim=embed_dim, vision_cfg=VISION, text_cfg=TEXT)
    return model, open_clip.get_tokenizer("ViT-B-32")
