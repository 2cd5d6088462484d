"""The model a run config describes, built and loaded in one place for every command (`ost
train`, `ost eval`, `ost plot-plan`): its classes and descriptors, the open_clip model with OST's
classifier, checkpoint weights, and the weight-space ensemble `ost eval` scores with.
"""
from __future__ import annotations

import logging

import torch

from ..model.checkpoint import load_state_dict_file
from .config import RunConfig
from ..descriptors.descriptors import DescriptorSet
from ..model.model import OSTModel

log = logging.getLogger("ost.build")


def descriptor_set(cfg: RunConfig, labels=None, spatio=None, temporal=None) -> DescriptorSet:
    """The classes and descriptors of the config (or of the given files, e.g. an evaluation
    split); with class_name_baseline, each class's one "descriptor" is its name."""
    labels = cfg.data_path(labels or cfg.labels)
    if cfg.class_name_baseline:
        from ..descriptors.descriptors import load_class_names

        names = load_class_names(labels)
        return DescriptorSet(names, [[n] for n in names], [[n] for n in names])
    return DescriptorSet.from_files(labels, cfg.data_path(spatio or cfg.spatio), cfg.data_path(temporal or cfg.temporal))


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def build_model(cfg: RunConfig, descriptors: DescriptorSet | None = None, weights_follow: bool = False) -> OSTModel:
    """The OST model the config describes (descriptors default to the config's files).
    weights_follow: a checkpoint's weights are loaded next, replacing every weight, so no
    pretrained weights are fetched (offline, open_clip would spend a minute in download
    retries for weights the checkpoint overwrites) and open_clip's "initialized randomly"
    warning, which would be wrong, is left out."""
    # The files first: a missing or malformed one is reported before the model is built.
    descriptors = descriptors or descriptor_set(cfg)
    import open_clip

    if cfg.pretrained == "openai" and "quickgelu" not in cfg.model.lower() and \
            not cfg.model_overrides.get("force_quick_gelu"):
        # OpenAI's CLIP weights were trained with QuickGELU; open_clip only warns.
        log.warning("model %s with pretrained=openai uses nn.GELU, not the QuickGELU the weights were trained "
                    "with: use %s-quickgelu (as the presets do)", cfg.model, cfg.model)
    pretrained, options = cfg.pretrained, dict(cfg.model_overrides)
    if weights_follow:
        # Nor the towers' default weights (a Hugging Face text tower's, e.g.).
        pretrained, options = None, {**options, "pretrained_image": False, "pretrained_text": False}
    quiet = _NoRandomInitWarning()
    if weights_follow:
        logging.getLogger().addFilter(quiet)
    try:
        # Seeded, without touching the caller's random state: "the config's model as created"
        # (no pretrained weights, no checkpoint) is the same model on every run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            clip = open_clip.create_model(cfg.model, pretrained=pretrained, **options)
    finally:
        logging.getLogger().removeFilter(quiet)
    prompts = dict(spatio_prompt=cfg.spatio_prompt, temporal_prompt=cfg.temporal_prompt)
    if cfg.class_name_baseline:
        prompts = dict(spatio_prompt=cfg.class_prompt, temporal_prompt=cfg.class_prompt)
    return OSTModel(clip, open_clip.get_tokenizer(cfg.model), descriptors, config=cfg.od, **prompts)


def _weights(checkpoint: str | None) -> dict | None:
    """A checkpoint's state dict, read before any model is built (a missing or wrong file is
    reported in a second, not after the model)."""
    return load_state_dict_file(checkpoint) if checkpoint else None


def model_with_weights(cfg: RunConfig, state: dict | None, source: str | None,
                descriptors: DescriptorSet | None) -> OSTModel:
    """The config's model with the weights `state` (read from `source`), if any."""
    model = build_model(cfg, descriptors, weights_follow=state is not None)
    if state is None:
        return model
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # another model's weights: one line, not torch's page of keys
        ours = model.state_dict()
        missing = sorted(set(ours) - set(state))
        extra = sorted(set(state) - set(ours))
        shapes = sorted(k for k in set(ours) & set(state) if ours[k].shape != state[k].shape)
        what = "; ".join(f"{label} {len(keys)} (e.g. {keys[0]!r})" for label, keys in
                         (("missing", missing), ("unexpected", extra), ("shape mismatch", shapes)) if keys)
        raise ValueError(f"{source}: not weights of the config's model {cfg.model!r}: {what or exc}") from None
    return model


def load_model(cfg: RunConfig, checkpoint: str | None, descriptors: DescriptorSet | None = None) -> OSTModel:
    """The config's model, with the weights of `checkpoint` (loaded with weights_only=True, and
    before the model is built) if given."""
    return model_with_weights(cfg, _weights(checkpoint), checkpoint, descriptors)


def scoring_model(cfg: RunConfig, checkpoint: str | None = None, zero_shot: str | None = None,
                  ensemble_alpha: float | None = None, descriptors: DescriptorSet | None = None) -> OSTModel:
    """The model `ost eval` and `ost plot-plan` score with: the config's, with checkpoint's
    weights, weight-space ensembled with the zero-shot model (`zero_shot`'s weights, default:
    the pretrained model as created) when ensemble_alpha (default: the config's) says so. One
    path, so both commands (and ost.Recognizer) score alike. descriptors: the classes (default:
    the config's files). Every file is read before the first model is built."""
    from ..model.ensemble import ensemble_models

    alpha = ensemble_alpha if ensemble_alpha is not None else cfg.eval.ensemble_alpha
    if alpha is not None and not (cfg.pretrained or zero_shot):
        # Without pretrained weights "the model as created" is a random one: no zero-shot model at all.
        raise ValueError("ensembling (eval.ensemble_alpha) mixes in the zero-shot model, but the "
                         "config sets no `pretrained` weights and no --zero-shot file was given: it would be a "
                         "randomly initialized model. Set pretrained (e.g. openai), pass --zero-shot, or drop the "
                         "ensembling (--set eval.ensemble_alpha=null)")
    descriptors = descriptors or descriptor_set(cfg)
    state = _weights(checkpoint)
    zero_shot_state = _weights(zero_shot) if alpha is not None else None
    model = model_with_weights(cfg, state, checkpoint, descriptors)
    if alpha is not None:
        model = ensemble_models(model_with_weights(cfg, zero_shot_state, zero_shot, descriptors), model, alpha)
    return model
