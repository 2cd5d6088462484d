"""The OST model's logits, caching and gradients; the loss; weight-space ensembling."""
import math

import pytest
import torch
import torch.nn.functional as F

from ost.descriptors.descriptors import DescriptorSet
from ost.model.ensemble import ensemble_models, ensemble_state_dicts
from ost.model.loss import cross_entropy_loss, same_class_target, symmetric_kl_loss
from ost.model.logits import DescriptorEmbeddings, ODLogitsConfig, od_logits
from ost.model.model import OSTModel
from ost_kernels import od_solve
from tests.helpers.tiny_clip import tiny_clip

DESCS = DescriptorSet(
    ["archery", "juggling", "surfing"],
    [["bow", "target", "arrow"], ["balls"], ["board", "wave"]],
    [["draw the bow", "release the arrow"], ["toss a ball", "catch it", "toss again"], ["paddle out"]],
)


@pytest.fixture
def model():
    clip, tok = tiny_clip()
    return OSTModel(clip, tok, DESCS)


def test_create_from_an_open_clip_name():
    model, preprocess = OSTModel.create("RN50", DESCS, pretrained=None)
    assert isinstance(model, OSTModel) and callable(preprocess) and model.embed_dim == 1024


def test_prompts_follow_the_paper(model):
    assert model.prompts("spatio")[0][1] == "This is a video about target"
    assert model.prompts("temporal")[1][2] == "A video of juggling usually includes toss again"


def test_logits_equal_a_direct_computation(model, gen):
    model.eval()
    frames = torch.randn(4, 5, 3, 32, 32, generator=gen)
    frame_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 5, [True, False, True, False, True]])
    with torch.no_grad():
        got = model(frames, frame_mask=frame_mask)
        emb = model.encode_video(frames)
        desc = model.encode_descriptors()
        s = model.clip.logit_scale.exp()
    want = 0.0
    m = frame_mask.float()
    v_bar = (F.normalize(emb, dim=-1) * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    for e, mask in ((desc.spatio, desc.spatio_mask), (desc.temporal, desc.temporal_mask)):
        d_bar = (F.normalize(e, dim=-1) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        ot = od_solve(emb, e, frame_mask=frame_mask, desc_mask=mask)
        want = want + 0.5 * (s * v_bar @ d_bar.T + s * ot)
    assert got.shape == (4, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # descriptor counts differ per class: the mask carries them
    assert desc.spatio_mask.sum(1).tolist() == [3, 1, 2] and desc.temporal_mask.sum(1).tolist() == [2, 3, 1]


def test_weights_and_terms_are_configurable(model, gen):
    model.eval()
    frames = torch.randn(2, 4, 3, 32, 32, generator=gen)
    with torch.no_grad():
        emb, desc, s = model.encode_video(frames), model.encode_descriptors(), model.clip.logit_scale.exp()
        only_ot_spatio = od_logits(emb, desc, s, ODLogitsConfig(spatio_weight=1.0, temporal_weight=0.0, use_pooled=False))
    torch.testing.assert_close(only_ot_spatio, s * od_solve(emb, desc.spatio, desc_mask=desc.spatio_mask))


def test_evaluation_encodes_each_descriptor_once(model, gen, monkeypatch):
    calls = []
    encode = model.clip.encode_text
    monkeypatch.setattr(model.clip, "encode_text", lambda t: calls.append(len(t)) or encode(t))
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 3, 32, 32, generator=gen))
    assert sum(calls) == 6 + 6  # 6 Spatio + 6 Temporal prompts, once
    model.train()
    model(torch.randn(2, 3, 3, 32, 32, generator=gen))
    assert sum(calls) == 24  # training re-encodes (the text encoder learns)


def test_subsets_of_classes_keep_the_sets_descriptor_count(model):
    sub = model.encode_descriptors(torch.tensor([1]))  # juggling: 1 Spatio, 3 Temporal descriptors
    assert sub.spatio.shape[1] == 3 and sub.temporal.shape[1] == 3
    assert sub.spatio_mask.tolist() == [[True, False, False]]


def test_gradients_flow_to_both_encoders(model, gen):
    model.train()
    labels = torch.tensor([0, 2, 0, 1])
    logits = model(torch.randn(4, 3, 3, 32, 32, generator=gen), class_ids=labels)
    assert logits.shape == (4, 4)
    symmetric_kl_loss(logits, labels).backward()
    vis = model.clip.visual.conv1.weight.grad
    txt = model.clip.token_embedding.weight.grad
    assert vis is not None and vis.abs().sum() > 0
    assert txt is not None and txt.abs().sum() > 0


def test_cached_embeddings_must_match_the_model(model):
    bad = DescriptorEmbeddings(torch.randn(3, 3, 16), torch.ones(3, 3, dtype=torch.bool),
                               torch.randn(3, 3, 16), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="cached descriptor embeddings have d=16 but the model's embedding size is 32"):
        model.set_descriptor_embeddings(bad)
    with pytest.raises(ValueError, match="frame embeddings have d=32 but the descriptor embeddings have d=16"):
        od_logits(torch.randn(2, 4, 32), bad, 1.0)


def test_descriptor_embeddings_save_and_load(model, tmp_path):
    model.eval()
    emb = model.descriptor_embeddings()
    emb.save(tmp_path / "emb.pt")
    again = DescriptorEmbeddings.load(tmp_path / "emb.pt")
    torch.testing.assert_close(again.temporal, emb.temporal)
    model.set_descriptor_embeddings(again)
    assert model.descriptor_embeddings() is again


def test_set_descriptors_drops_the_cached_embeddings(model):
    """Evaluation and the recognizer change a model's classes and prompts: the embeddings cached
    for the old ones must not score the new ones."""
    model.eval()
    before = model.descriptor_embeddings()
    assert model.descriptor_embeddings() is before  # cached
    two = DescriptorSet(["archery", "rowing"], [["bow"], ["oar", "boat"]], [["draw the bow"], ["pull the oar"]])
    model.set_descriptors(two)
    after = model.descriptor_embeddings()
    assert after is not before and after.num_classes == 2
    torch.testing.assert_close(after.spatio[1, :2], model.encode_text(["This is a video about oar",
                                                                        "This is a video about boat"]))
    model.set_descriptors(two, spatio_prompt="{descriptor} ({class_name})", temporal_prompt="{class_name}")
    assert model.prompts("spatio")[1] == ["oar (rowing)", "boat (rowing)"]
    assert model.prompts("temporal")[0] == ["archery"]
    torch.testing.assert_close(model.descriptor_embeddings().spatio[1, :2],
                               model.encode_text(["oar (rowing)", "boat (rowing)"]))
    model.set_descriptors(DESCS)  # the prompts stay as last set
    assert model.descriptor_embeddings().num_classes == 3
    assert model.prompts("spatio")[2] == ["board (surfing)", "wave (surfing)"]


def test_loss_equals_a_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [1.5, -0.5, 0.2]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    e10 = math.exp(10)
    # rows of softmax(10 * same): samples 0 and 1 share a class
    t01 = [e10 / (2 * e10 + 1)] * 2 + [1 / (2 * e10 + 1)]
    t2 = [1 / (e10 + 2)] * 2 + [e10 / (e10 + 2)]
    target = [t01, t01, t2]

    def kl(rows):
        total = 0.0
        for i, row in enumerate(rows):
            lse = math.log(sum(math.exp(x) for x in row))
            total += sum(t * (math.log(t) - (x - lse)) for t, x in zip(target[i], row))
        return total / len(rows)

    L = logits.tolist()
    want = kl(L) + kl([list(c) for c in zip(*L)])
    got = symmetric_kl_loss(logits, labels)
    assert math.isclose(got.item(), want, rel_tol=1e-5)
    got.backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(same_class_target(labels).sum(1), torch.ones(3))
    assert math.isclose(cross_entropy_loss(logits.detach(), torch.tensor([0, 1, 2])).item(),
                        F.cross_entropy(logits.detach(), torch.tensor([0, 1, 2])).item())
    with pytest.raises(ValueError, match=r"logits must be \(B, B\)"):
        symmetric_kl_loss(torch.randn(3, 4), labels)


def test_ensembling_endpoints_are_exact_and_mismatches_are_refused():
    a, _ = tiny_clip(seed=1)
    b, _ = tiny_clip(seed=2)
    for alpha, src in ((0.0, b), (1.0, a)):
        merged = ensemble_models(a, b, alpha)
        for (k, v), w in zip(merged.state_dict().items(), src.state_dict().values()):
            assert torch.equal(v, w), k
    mid = ensemble_state_dicts(a.state_dict(), b.state_dict(), 0.2)
    k = "visual.conv1.weight"
    torch.testing.assert_close(mid[k], 0.2 * a.state_dict()[k] + 0.8 * b.state_dict()[k])
    other, _ = tiny_clip(seed=3, embed_dim=16)
    with pytest.raises(ValueError, match="has shape .* in the zero-shot model but"):
        ensemble_models(other, b, 0.2)
    sd = b.state_dict()
    sd.pop(k)
    with pytest.raises(ValueError, match="different parameters"):
        ensemble_state_dicts(a.state_dict(), sd, 0.2)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        ensemble_state_dicts(a.state_dict(), b.state_dict(), 1.5)


def test_ensemble_command_line(tmp_path):
    from ost.cli import main

    a, _ = tiny_clip(seed=1)
    b, _ = tiny_clip(seed=2)
    torch.save(a.state_dict(), tmp_path / "zs.pt")
    torch.save({"model": b.state_dict(), "step": 7}, tmp_path / "ft.pt")
    assert main(["ensemble", "--zero-shot", str(tmp_path / "zs.pt"), "--finetuned", str(tmp_path / "ft.pt"),
                 "--alpha", "0.2", "--out", str(tmp_path / "wise.pt")]) == 0
    merged = torch.load(tmp_path / "wise.pt", weights_only=True)
    want = ensemble_state_dicts(a.state_dict(), b.state_dict(), 0.2)
    assert all(torch.equal(merged[k], want[k]) for k in want)
    torch.save({"not": "a state dict"}, tmp_path / "bad.pt")
    assert main(["ensemble", "--zero-shot", str(tmp_path / "bad.pt"), "--finetuned", str(tmp_path / "ft.pt"),
                 "--out", str(tmp_path / "x.pt")]) == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_masked_nan_reaches_no_logit_nor_gradient(bad, gen):
    """NaN or inf in a masked frame or descriptor changes no logit (pooled and OD terms) and
    gets zero gradient."""
    frames = torch.randn(2, 4, 16, generator=gen)
    emb = [torch.randn(3, 2, 16, generator=gen) for _ in range(2)]
    fm = torch.tensor([[True, True, False, True], [True] * 4])
    dm = torch.tensor([[True, False], [True, True], [True, True]])
    out = {}
    for value in (bad, 0.0):
        f, s, t = frames.clone(), emb[0].clone(), emb[1].clone()
        f[0, 2], s[0, 1], t[0, 1] = value, value, value
        for x in (f, s, t):
            x.requires_grad_(True)
        desc = DescriptorEmbeddings(s, dm, t, dm)
        logits = od_logits(f, desc, 10.0, ODLogitsConfig(backend="torch"), frame_mask=fm)
        logits.sum().backward()
        out[value] = (logits.detach(), f.grad, s.grad, t.grad)
    for got, want in zip(out[bad], out[0.0]):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want)
    assert (out[bad][1][0, 2] == 0).all() and (out[bad][2][0, 1] == 0).all()
