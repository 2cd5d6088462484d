"""ost.model.convert: official OST checkpoints (their key layout, rebuilt here on a tiny random
open_clip CLIP) convert into an OSTModel state dict; anything that does not fit is refused."""
import sys
import types

import pytest
import torch
from torch import nn

from ost.model.checkpoint import load_state_dict_file
from ost.model.convert import convert_official_checkpoint, convert_official_state_dict, load_official_checkpoint
from ost.descriptors.descriptors import DescriptorSet
from ost.model.model import OSTModel
from tests.helpers.tiny_clip import tiny_clip


# -- the official layout ------------------------------------------------------------------------
class OfficialTextEncoder(nn.Module):
    """The submodules the official TextEncoder (trainers/OST.py) takes from CLIP."""

    def __init__(self, clip):
        super().__init__()
        self.transformer = clip.transformer
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.token_embedding = clip.token_embedding


class OfficialOST(nn.Module):
    """The parameters of the official OST model: CLIP's visual, the text encoder, logit_scale."""

    def __init__(self, clip):
        super().__init__()
        self.image_encoder = clip.visual
        self.logit_scale = clip.logit_scale
        self.text_encoder = OfficialTextEncoder(clip)


class DDP(nn.Module):
    """Stands for DistributedDataParallel, whose state dict keys start with `module.`."""

    def __init__(self, module):
        super().__init__()
        self.module = module


@pytest.fixture(scope="module")
def source_clip():
    return tiny_clip(seed=0)[0]


@pytest.fixture(scope="module")
def official_state(source_clip):
    state = DDP(OfficialOST(source_clip)).state_dict()
    return {k: v.clone() for k, v in state.items()}


def _ost_model(seed=1):
    clip, tokenizer = tiny_clip(seed=seed)  # other random weights, so loading must change them
    return OSTModel(clip, tokenizer, DescriptorSet(["a"], [["x"]], [["y"]]))


def test_official_layout_is_what_the_tests_assume(official_state):
    keys = set(official_state)
    assert {"module.logit_scale", "module.image_encoder.proj", "module.image_encoder.conv1.weight",
            "module.text_encoder.token_embedding.weight", "module.text_encoder.positional_embedding",
            "module.text_encoder.ln_final.weight", "module.text_encoder.text_projection",
            "module.text_encoder.transformer.resblocks.0.attn.in_proj_weight"} <= keys
    assert all(k.startswith(("module.image_encoder.", "module.text_encoder.", "module.logit_scale")) for k in keys)


def test_round_trip_into_ost_model_gives_identical_weights(official_state, source_clip):
    model = _ost_model()
    converted = convert_official_state_dict({"model": official_state, "epoch": 9}, model.clip.state_dict())
    assert set(converted) == set(model.state_dict())
    model.load_state_dict(converted, strict=True)
    for name, value in source_clip.state_dict().items():
        assert torch.equal(model.state_dict()["clip." + name], value), name


def test_plain_state_dict_under_state_dict_or_without_module_prefix(official_state):
    target = _ost_model().state_dict()  # an OSTModel's keys (with `clip.`) are accepted as the target too
    plain = {k.removeprefix("module."): v for k, v in official_state.items()}
    for state in (plain, {"state_dict": official_state}):
        assert set(convert_official_state_dict(state, target)) == set(target)


def test_prompt_learner_buffers_are_dropped_like_the_official_loader_does(official_state):
    target = _ost_model().clip.state_dict()
    extra = dict(official_state, **{"module.prompt_learner.token_prefix": torch.zeros(3, 1, 64)})
    assert set(convert_official_state_dict(extra, target)) == {"clip." + k for k in target}


@pytest.mark.parametrize("key", ["module.image_encoder.VPT", "module.text_encoder.transformer.resblocks.1.VPT_shallow",
                                 "module.unknown.weight"])
def test_an_unknown_key_is_refused(official_state, key):
    state = dict(official_state, **{key: torch.zeros(2, 64)})
    with pytest.raises(ValueError, match=r"1 official keys have no place in the target model: "
                                         + key.removeprefix("module.").replace(".", r"\.")):
        convert_official_state_dict(state, _ost_model().clip.state_dict())


def test_many_unknown_keys_are_listed_up_to_ten(official_state):
    state = dict(official_state, **{f"module.extra.{i:02d}": torch.zeros(1) for i in range(12)})
    with pytest.raises(ValueError, match=r"12 official keys .*extra\.09 \.\.\. \(12 in all\)") as err:
        convert_official_state_dict(state, _ost_model().clip.state_dict())
    assert "extra.10" not in str(err.value)


def test_a_missing_key_is_refused(official_state):
    state = {k: v for k, v in official_state.items() if k != "module.text_encoder.ln_final.bias"}
    with pytest.raises(ValueError, match=r"1 target keys get no value from the official state dict: ln_final\.bias"):
        convert_official_state_dict(state, _ost_model().clip.state_dict())


def test_a_wrong_shape_is_refused(official_state):
    state = dict(official_state, **{"module.image_encoder.proj": torch.zeros(64, 16)})
    with pytest.raises(ValueError, match=r"1 shapes differ .*visual\.proj: official \(64, 16\), target \(64, 32\)"):
        convert_official_state_dict(state, _ost_model().clip.state_dict())


def test_non_tensor_values_are_refused(official_state):
    with pytest.raises(ValueError, match="module.logit_scale are not tensors"):
        convert_official_state_dict(dict(official_state, **{"module.logit_scale": 4.6}), {"logit_scale": ()})


# -- checkpoint files -------------------------------------------------------------------------
class CfgNode(dict):
    """Pickles like yacs.config.CfgNode: a dict subclass with attributes, including a set."""

    def __init__(self, init=None):
        super().__init__(init or {})
        self.__dict__["__immutable__"] = False
        self.__dict__["__deprecated_keys__"] = set()
        self.__dict__["__new_allowed__"] = False


CONFIG_CODE_RAN = []


def _record(what):
    CONFIG_CODE_RAN.append(what)


class Evil:
    """Unpickling it would call _record: pickled code that must never run."""

    def __reduce__(self):
        return (_record, ("ran",))


@pytest.fixture
def official_checkpoint(official_state, tmp_path, monkeypatch):
    """A file shaped like the official epoch_saving output, with a yacs-like config."""
    yacs = types.ModuleType("yacs")
    yacs_config = types.ModuleType("yacs.config")
    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    yacs_config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", yacs_config)
    try:
        optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=1e-5).state_dict()
        config = CfgNode({"MODEL": CfgNode({"ARCH": "ViT-B/16"}), "TRAINER": CfgNode({"OST": CfgNode({"N": 4})})})
        path = tmp_path / "OST_10_epochs_k400_finetuned.pth"
        torch.save({"model": official_state, "optimizer": optimizer,
                    "lr_scheduler": {"t_initial": 100, "base_values": [8e-6], "noise_range_t": None},
                    "max_accuracy": 55.9, "epoch": 9, "config": config}, path)
    finally:
        CfgNode.__module__, CfgNode.__qualname__ = __name__, "CfgNode"
    monkeypatch.delitem(sys.modules, "yacs.config")  # loading must not need yacs
    monkeypatch.delitem(sys.modules, "yacs")
    return path


def test_official_checkpoint_with_a_yacs_config_loads_without_running_pickled_code(official_checkpoint):
    obj = load_official_checkpoint(official_checkpoint)
    assert obj["epoch"] == 9 and type(obj["config"]).__name__ == "OrderedDict"
    assert obj["config"]["TRAINER"]["OST"]["N"] == 4


def test_convert_official_checkpoint_file(official_checkpoint, source_clip, tmp_path):
    model = _ost_model()
    summary = convert_official_checkpoint(official_checkpoint, tmp_path / "ost.pt", clip_model=model.clip)
    assert summary == {"out": str(tmp_path / "ost.pt"), "tensors": len(model.state_dict()), "ignored": []}
    model.load_state_dict(load_state_dict_file(tmp_path / "ost.pt"), strict=True)
    for name, value in source_clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], value), name


def test_other_pickled_objects_are_refused_with_a_way_forward(official_state, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": official_state, "extra": Evil()}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: holds pickled objects other than weights \(.*_record\).*"
                                         r"weights_only=False"):
        convert_official_checkpoint(path, tmp_path / "out.pt", clip_model=_ost_model().clip)
    assert CONFIG_CODE_RAN == [] and not (tmp_path / "out.pt").exists()


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert_official_checkpoint(tmp_path / "nope.pth", tmp_path / "out.pt", clip_model=nn.Linear(1, 1))


def test_conversion_errors_name_the_file(official_state, tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({k: v for k, v in official_state.items() if k != "module.logit_scale"}, path)
    with pytest.raises(ValueError, match=r"bad\.pth: 1 target keys get no value .*: logit_scale"):
        convert_official_checkpoint(path, tmp_path / "out.pt", clip_model=_ost_model().clip)
    assert not (tmp_path / "out.pt").exists()


def test_a_file_that_is_no_checkpoint_is_said_so(tmp_path):
    """A JSON file got the advice to extract its weights with weights_only=False."""
    path = tmp_path / "descriptors.json"
    path.write_text('{"0": ["a ball"]}\n')
    with pytest.raises(ValueError, match=r"descriptors\.json: not a checkpoint: not a file torch\.save writes "
                                         r"\(it looks like JSON\)$"):
        convert_official_checkpoint(path, tmp_path / "out.pt", clip_model=nn.Linear(1, 1))
