"""Data: videos and the lists that name them, up to the clips a model takes.

    annotations.py   annotation lists (`path label_id`), few-shot subsets
    decode.py        PyAV decoding of only what a clip needs (bit-identical to decoding everything)
    transforms.py    the official geometric pipeline (multi-scale crop, flip, resize, views)
    augment.py       its photometric half (jitter, grayscale, normalization), batched on the device
    data.py          TSN sampling, the clip dataset (VideoDataset), collation
    synthetic.py     a synthetic video data set for tests and demos (`ost make-synthetic`)
    published.py     `ost data download`: the paper's label, descriptor and split files, pinned
                     and SHA-256 checked (their manifest: published_manifest.json)

Imports nothing of ost but ost.files and ost.descriptors (synthetic.py writes descriptor
files): no model, no run.
"""
