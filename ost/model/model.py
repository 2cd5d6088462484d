"""The OST model on open_clip: per-frame video embeddings, descriptor embeddings, and the OD
logits of ost.model.logits (the paper's Eq. 13).

Prompts default to the paper's code: Spatio descriptors as "This is a video about {descriptor}",
Temporal ones conditioned on the class name, "A video of {class_name} usually includes
{descriptor}".
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm  # tqdm.auto's iterates its iterable twice (tests/ost_layer/test_user_errors.py)

from ..descriptors.descriptors import KINDS, DescriptorSet
from .logits import DescriptorEmbeddings, ODLogitsConfig, od_logits

# The logits' own names (DescriptorEmbeddings, ODLogitsConfig, od_logits) are ost.model.logits's.
__all__ = ["OSTModel", "SPATIO_PROMPT", "TEMPORAL_PROMPT", "CLASS_PROMPT"]

SPATIO_PROMPT = "This is a video about {descriptor}"
TEMPORAL_PROMPT = "A video of {class_name} usually includes {descriptor}"
# The class-name baseline's one prompt per class (the official code's text_prompt).
CLASS_PROMPT = "a video of a person {class_name}."


class OSTModel(nn.Module):
    """An open_clip CLIP with OST's descriptor-based classifier.

    clip: any open_clip CLIP (from open_clip.create_model / create_model_and_transforms;
    `pretrained` is the caller's choice); tokenizer: open_clip.get_tokenizer(name).
    """

    def __init__(self, clip: nn.Module, tokenizer, descriptors: DescriptorSet, *,
                 config: ODLogitsConfig | None = None, spatio_prompt: str = SPATIO_PROMPT,
                 temporal_prompt: str = TEMPORAL_PROMPT, text_batch_size: int = 256):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.descriptors = descriptors
        self.config = config or ODLogitsConfig()
        self.spatio_prompt = spatio_prompt
        self.temporal_prompt = temporal_prompt
        self.text_batch_size = text_batch_size
        self._cache: DescriptorEmbeddings | None = None

    @classmethod
    def create(cls, model_name: str, descriptors: DescriptorSet, pretrained: str | None = None, **kwargs):
        """(OSTModel, preprocess) for any open_clip model name; `pretrained` is passed through
        (e.g. "openai"; None = random weights). Other keyword arguments go to OSTModel."""
        import open_clip

        clip, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
        return cls(clip, open_clip.get_tokenizer(model_name), descriptors, **kwargs), preprocess

    # -- text --------------------------------------------------------------------------------
    def prompts(self, kind: str) -> list[list[str]]:
        """The text prompts of every descriptor of `kind`, per class."""
        names = self.descriptors.class_names
        if kind == "spatio":
            return [[self.spatio_prompt.format(descriptor=d, class_name=names[a]) for d in items]
                    for a, items in enumerate(self.descriptors.spatio)]
        if kind == "temporal":
            return [[self.temporal_prompt.format(descriptor=d, class_name=names[a]) for d in items]
                    for a, items in enumerate(self.descriptors.temporal)]
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def encode_text(self, texts: list[str], progress: bool = False, label: str = "texts") -> torch.Tensor:
        """(n,) texts -> (n, d) embeddings, in batches of text_batch_size; `label` names the
        progress bar."""
        device = next(self.clip.parameters()).device
        out = []
        batches = range(0, len(texts), self.text_batch_size)
        for i in tqdm(batches, desc=f"encoding {label}", unit="batch", disable=not progress, leave=False):
            out.append(self.clip.encode_text(self.tokenizer(texts[i : i + self.text_batch_size]).to(device)))
        return torch.cat(out)

    def encode_descriptors(self, class_ids: torch.Tensor | None = None, progress: bool = False) -> DescriptorEmbeddings:
        """Embeddings of every descriptor of the given classes (all by default); differentiable."""
        ids = range(self.descriptors.num_classes) if class_ids is None else [int(a) for a in class_ids]
        if not ids:
            raise ValueError("encode_descriptors: no classes given")
        parts = []
        for kind in KINDS:
            per_class = self.prompts(kind)
            chosen = [per_class[a] for a in ids]
            # Padded to the whole set's largest count, so any subset has the same N (ranks
            # gathering their batches' descriptors need equal shapes).
            n_max = max(len(p) for p in per_class)
            flat = [t for p in chosen for t in p]
            emb = self.encode_text(flat, progress, label=f"{kind} descriptors ({len(flat)})")
            d = emb.shape[-1]
            padded = emb.new_zeros(len(chosen), n_max, d)
            mask = torch.zeros(len(chosen), n_max, dtype=torch.bool, device=emb.device)
            rows = torch.tensor([a for a, p in enumerate(chosen) for _ in p], device=emb.device)
            cols = torch.tensor([k for p in chosen for k in range(len(p))], device=emb.device)
            padded = padded.index_put((rows, cols), emb)
            mask[rows, cols] = True
            parts += [padded, mask]
        return DescriptorEmbeddings(*parts)

    def descriptor_embeddings(self, progress: bool = False) -> DescriptorEmbeddings:
        """All classes' descriptor embeddings. Outside training (or without grad) they are
        computed once and cached, so evaluation encodes every descriptor once; train() clears it."""
        if self.training and torch.is_grad_enabled():
            return self.encode_descriptors(progress=progress)
        if self._cache is None:
            with torch.no_grad():
                self._cache = self.encode_descriptors(progress=progress)
        return self._cache

    def set_descriptors(self, descriptors: DescriptorSet, *, spatio_prompt: str | None = None,
                        temporal_prompt: str | None = None) -> None:
        """Score against `descriptors` from now on, with these prompts where given (the texts
        encoded are the prompts filled with the descriptors). The cached embeddings of the old
        ones are dropped: the next descriptor_embeddings() encodes the new ones, once."""
        self.descriptors = descriptors
        if spatio_prompt is not None:
            self.spatio_prompt = spatio_prompt
        if temporal_prompt is not None:
            self.temporal_prompt = temporal_prompt
        self._cache = None

    def set_descriptor_embeddings(self, emb: DescriptorEmbeddings) -> None:
        """Use precomputed descriptor embeddings (e.g. DescriptorEmbeddings.load) as the cache."""
        d = self.embed_dim
        if emb.dim != d:
            raise ValueError(f"cached descriptor embeddings have d={emb.dim} but the model's embedding size is {d}")
        if emb.num_classes != self.descriptors.num_classes:
            raise ValueError(f"cached descriptor embeddings cover {emb.num_classes} classes, the descriptor set "
                             f"{self.descriptors.num_classes}")
        self._cache = emb

    def train(self, mode: bool = True):
        self._cache = None  # the text encoder may change
        return super().train(mode)

    @property
    def embed_dim(self) -> int:
        """The joint embedding size d (from one text encoding, which works for every open_clip model)."""
        with torch.no_grad():
            return self.encode_text(["a"]).shape[-1]

    # -- video -------------------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) frames -> (B, T, d) per-frame embeddings."""
        if frames.dim() != 5:
            raise ValueError(f"frames must be (B, T, 3, H, W), got shape {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        return self.clip.encode_image(frames.flatten(0, 1)).view(B, T, -1)

    def logits(self, frame_emb: torch.Tensor, desc: DescriptorEmbeddings,
               frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        return od_logits(frame_emb, desc, self.clip.logit_scale.exp(), self.config, frame_mask)

    def forward(self, frames: torch.Tensor, class_ids: torch.Tensor | None = None,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, A) against all classes, or (B, len(class_ids)) against the given ones (the
        in-batch contrastive setup of training encodes only the batch's classes)."""
        frame_emb = self.encode_video(frames)
        desc = self.encode_descriptors(class_ids) if class_ids is not None else self.descriptor_embeddings()
        return self.logits(frame_emb, desc, frame_mask)
