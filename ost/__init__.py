"""ost: the OST method (CVPR'24) on open_clip, using ost_kernels.od_solve for its Optimal
Descriptor Solver. Descriptors (files and LLM generation), the model and its logits, the loss,
weight-space ensembling; command line `ost`."""
from .descriptors.descriptors import (DescriptorError, DescriptorSet, load_class_names, load_descriptors,
                                      save_descriptors)

__all__ = ["DescriptorError", "DescriptorSet", "Prediction", "Recognizer", "load_class_names", "load_descriptors",
           "save_descriptors"]


def __getattr__(name: str):
    # The recognizer imports torch and open_clip: loaded when first asked for, not with `ost`.
    if name in ("Recognizer", "Prediction"):
        from .run import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'ost' has no attribute {name!r}")
