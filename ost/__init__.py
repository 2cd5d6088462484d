"""ost: the OST method (CVPR'24) on open_clip, using ost_kernels.od_solve for its Optimal
Descriptor Solver. Descriptors (files and LLM generation), the model and its logits, the loss,
weight-space ensembling; command line `ost`."""
from .descriptors import DescriptorError, DescriptorSet, load_class_names, load_descriptors, save_descriptors

__all__ = ["DescriptorError", "DescriptorSet", "load_class_names", "load_descriptors", "save_descriptors"]
