"""Descriptors: the text side of OST, the classes and what an LLM says about them.

    descriptors.py   label CSVs and descriptor JSON (the paper's formats), DescriptorSet, validation
    generate.py      LLM descriptor generation (the paper's prompts, OpenAI-compatible), resumable
    reindex.py       descriptor files re-indexed to a subset's labels (base-to-novel)

Imports nothing of ost but ost.files: no torch, no video, no model.
"""
