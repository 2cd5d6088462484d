"""Model: OST on open_clip, from frames and descriptors to logits, losses and weights.

    model.py         OSTModel: prompts, text and video encoding, the descriptor embeddings it caches
    logits.py        Eq. 13 logits and ODLogitsConfig (the `od` settings), through ost_kernels.od_solve
    loss.py          the paper's symmetric KL loss; cross-entropy
    large_classes.py chunked top-k, class-sharded cross-entropy
    ensemble.py      weight-space ensembling (WiSE-FT)
    checkpoint.py    atomic checkpoints; every load with weights_only=True
    convert.py       the official released checkpoints as this package's state dicts

Imports nothing of ost but ost.files and ost.descriptors: no video decoding, no run config.
"""
