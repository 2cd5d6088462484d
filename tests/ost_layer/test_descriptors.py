"""Descriptor and label files: the paper's published files load and round-trip; bad files
give clear errors."""
import json

import pytest

from ost.descriptors.descriptors import (DescriptorError, DescriptorSet, load_class_names, load_descriptors,
                             parse_descriptor_object, save_descriptors)

from tests.helpers.paper_data import PAPER_DATA as DATA
from tests.helpers.paper_data import needs_paper_data as needs_data

# (labels csv, descriptor folder pattern) for every published dataset.
DATASETS = {
    "hmdb": ("hmdb_51_labels.csv", "hmdb/{kind}_descriptors/{n}_descriptors.json", (2, 4, 8)),
    "ucf": ("ucf_101_labels.csv", "ucf/{kind}_descriptors/{n}_descriptors.json", (2, 4, 8)),
    "k400": ("kinetics_400_labels.csv", "k400/{kind}_descriptors/{n}_descriptors.json", (2, 4, 8)),
    "sth": ("ssv2_labels.csv", "sth/{kind}_descriptors/{n}_descriptors.json", (4,)),
    "k600-split1": ("ZS_split1_K600.csv", "k600/split1/{kind}_{n}_descriptors.json", (2, 4, 8)),
    "k600-split2": ("ZS_split2_K600.csv", "k600/split2/{kind}_{n}_descriptors.json", (2, 4, 8)),
    "k600-split3": ("ZS_split3_K600.csv", "k600/split3/{kind}_{n}_descriptors.json", (2, 4, 8)),
}


@needs_data
@pytest.mark.parametrize("name", list(DATASETS))
def test_published_files_load_and_round_trip(name, tmp_path):
    labels, pattern, counts = DATASETS[name]
    names = load_class_names(DATA / "labels" / labels)
    for n in counts:
        files = {k: DATA / "descriptors" / pattern.format(kind=k, n=n) for k in ("spatio", "temporal")}
        ds = DescriptorSet.from_files(DATA / "labels" / labels, files["spatio"], files["temporal"])
        assert ds.num_classes == len(names)
        assert all(len(d) >= 1 for d in ds.spatio + ds.temporal)
        ds.save(tmp_path / "s.json", tmp_path / "t.json")
        again = DescriptorSet.from_files(DATA / "labels" / labels, tmp_path / "s.json", tmp_path / "t.json")
        assert again == ds


@needs_data
def test_published_k600_file_covers_only_part_of_k600():
    """The unsplit K600 descriptor files hold 217 classes, not the 600 of the K600 label file:
    on their own they load; against the 600 labels the validation names what is missing."""
    for kind in ("spatio", "temporal"):
        path = DATA / "descriptors" / "k600" / f"{kind}_descriptors" / "4_descriptors.json"
        assert len(load_descriptors(path)) == 217
        with pytest.raises(DescriptorError, match=r"missing class ids \[217, 218"):
            load_descriptors(path, num_classes=len(load_class_names(DATA / "labels" / "kinetics_600_labels.csv")))


def test_different_descriptor_counts_become_a_mask():
    ds = DescriptorSet(["a", "b"], [["x"], ["y", "z", "w"]], [["t1", "t2"], ["t3"]])
    texts, mask = ds.padded("spatio")
    assert texts == ["x", "", "", "y", "z", "w"]
    assert mask == [[True, False, False], [True, True, True]]


def _write(tmp_path, obj, name="d.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


@pytest.mark.parametrize(
    "obj, match",
    [
        ("{not json", "not valid JSON"),
        (["a"], "expected a JSON object keyed by class id"),
        ({"0": ["a"], "1": ["b"], "5": ["c"]}, r"unknown class ids \[5\]"),
        ({"0": ["a"]}, r"missing class ids \[1, 2\]"),
        ({"0": ["a"], "1": [], "2": ["c"]}, "class 1 has no descriptors"),
        ({"0": ["a"], "1": "b", "2": ["c"]}, "class 1 has no descriptors"),
        ({"0": ["a"], "1": ["b", 3], "2": ["c"]}, "class 1 descriptor 1 is not a non-empty string"),
        ({"0": ["a"], "1": ["  "], "2": ["c"]}, "class 1 descriptor 0 is not a non-empty string"),
        ({"0": ["a"], "x": ["b"], "2": ["c"]}, "key 'x' is not a class id"),
        ({"0": ["a"], "01": ["b"], "2": ["c"]}, "key '01' is not a class id"),
    ],
)
def test_bad_descriptor_files(tmp_path, obj, match):
    with pytest.raises(DescriptorError, match=match):
        load_descriptors(_write(tmp_path, obj), num_classes=3)


@pytest.mark.parametrize(
    "text, match",
    [
        ("name,id\n0,a\n", "expected a CSV with header 'id,name'"),
        ("id,name\nx,a\n", "class id 'x' is not an integer"),
        ("id,name\n0,a\n0,b\n", "class id 0 appears twice"),
        ("id,name\n0,a\n2,b\n", r"class ids must be 0..1 without gaps"),
        ("id,name\n0,\n", "class 0 has an empty name"),
        ("id,name\n", "no classes"),
    ],
)
def test_bad_label_files(tmp_path, text, match):
    p = tmp_path / "labels.csv"
    p.write_text(text)
    with pytest.raises(DescriptorError, match=match):
        load_class_names(p)


def test_set_checks_class_counts_and_save_is_atomic(tmp_path):
    with pytest.raises(DescriptorError, match="spatio descriptors are given for 1 classes but there are 2"):
        DescriptorSet(["a", "b"], [["x"]], [["y"], ["z"]])
    with pytest.raises(DescriptorError, match=r"temporal descriptors: class 1 \('b'\) has none"):
        DescriptorSet(["a", "b"], [["x"], ["y"]], [["y"], []])
    save_descriptors(tmp_path / "out.json", [["a"], ["b", "c"]])
    assert parse_descriptor_object(json.loads((tmp_path / "out.json").read_text()), 2) == [["a"], ["b", "c"]]
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind
