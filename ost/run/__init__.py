"""Run: what a run config asks for, with the data, descriptors and model put together.

    config.py        RunConfig (YAML + --set, bases, presets); its groups `od` (model/logits.py)
                     and `eval` (evaluate.py's EvalConfig)
    presets/         the paper's runs and ablations as YAML (`ost presets`)
    build.py         the model a config describes: descriptors, open_clip + OST, checkpoint
                     weights, the ensemble eval scores with
    train.py         the training loop and the official lr schedule
    distributed.py   torchrun: ranks, gathering, gradient averaging, the epoch sampler
    evaluate.py      top-1 / top-5, splits, multi-view (view_average), chunked class scoring,
                     per-video predictions
    recognizer.py    ost.Recognizer (`ost predict`): one's own videos and classes
    plots.py         the plan figure (Fig. 6 / 7)

Imports the other wings; nothing but ost.cli and ost.commands imports it, save `ost` itself
(ost.Recognizer, loaded when first asked for).
"""
