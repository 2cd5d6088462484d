"""ost.descriptors.reindex: descriptor files keyed by the full data set's ids, re-keyed to a base or novel
subset's ids by class name; on the paper's files and on small synthetic ones."""
import json

import pytest

from ost.descriptors.descriptors import DescriptorError, DescriptorSet, load_class_names, load_descriptors
from ost.descriptors.reindex import reindex_descriptors, subset_to_full_ids

from tests.helpers.paper_data import PAPER_DATA as DATA

# Subset label file prefix -> (full label file, descriptor folder, descriptor counts).
FULL_SETS = {
    "hmdb_51": ("hmdb_51_labels.csv", "hmdb", (2, 4, 8)),
    "ucf_101": ("ucf_101_labels.csv", "ucf", (2, 4, 8)),
    "kinetics_400": ("kinetics_400_labels.csv", "k400", (2, 4, 8)),
    "ssv2_174": ("ssv2_labels.csv", "sth", (4,)),
}


def _subset_files():
    if not DATA.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason="../shared/ost-data (the paper's files) is not here"))]
    files = sorted(p.name for p in (DATA / "labels").glob("*.csv")
                   if p.stem.endswith(("_base_labels", "_novel_labels")))
    assert files, "no base/novel label files in ../shared/ost-data/labels"
    return files


@pytest.mark.parametrize("subset_csv", _subset_files())
def test_published_subsets_get_the_full_sets_descriptors_by_name(subset_csv, tmp_path):
    prefix = subset_csv.rsplit("_", 2)[0]
    assert prefix in FULL_SETS, f"{subset_csv}: no full set known for it; add it to FULL_SETS"
    full_csv, folder, counts = FULL_SETS[prefix]
    full_names = load_class_names(DATA / "labels" / full_csv)
    subset_names = load_class_names(DATA / "labels" / subset_csv)
    for n in counts:
        outs, full = {}, {}
        for kind in ("spatio", "temporal"):
            source = DATA / "descriptors" / folder / f"{kind}_descriptors" / f"{n}_descriptors.json"
            outs[kind] = tmp_path / f"{kind}_{n}.json"
            reindex_descriptors(DATA / "labels" / full_csv, DATA / "labels" / subset_csv, source, outs[kind])
            full[kind] = dict(zip(full_names, load_descriptors(source)))
        ds = DescriptorSet.from_files(DATA / "labels" / subset_csv, outs["spatio"], outs["temporal"])
        assert ds.class_names == subset_names and 0 < ds.num_classes < len(full_names)
        for cid, name in enumerate(subset_names):
            assert ds.spatio[cid] == full["spatio"][name], (n, name)
            assert ds.temporal[cid] == full["temporal"][name], (n, name)


# -- synthetic -----------------------------------------------------------------------------------
def _csv(path, names):
    path.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)), encoding="utf-8")
    return path


@pytest.fixture
def full(tmp_path):
    names = ["archery", "bowling", "cartwheel", "dancing"]
    labels = _csv(tmp_path / "full.csv", names)
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps({str(i): [f"{n} {k}" for k in range(2)] for i, n in enumerate(names)}))
    return labels, desc


def test_reindex_matches_names_after_stripping_whitespace(full, tmp_path):
    labels, desc = full
    subset = tmp_path / "subset.csv"
    subset.write_text('id,name\n0,  dancing \n1,"archery"\n', encoding="utf-8")
    out = reindex_descriptors(labels, subset, desc, tmp_path / "out.json")
    assert out == [["dancing 0", "dancing 1"], ["archery 0", "archery 1"]]
    assert json.loads((tmp_path / "out.json").read_text()) == {"0": out[0], "1": out[1]}


def test_subset_names_missing_from_the_full_set_are_listed(full, tmp_path):
    labels, desc = full
    subset = _csv(tmp_path / "subset.csv", ["archery", "Bowling", "juggling"])
    with pytest.raises(DescriptorError, match=r"subset\.csv: 2 class names are not in .*full\.csv: "
                                              r"'Bowling' \(closest: 'bowling'\), 'juggling'"):
        reindex_descriptors(labels, subset, desc, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_duplicate_names_are_refused(full, tmp_path):
    labels, desc = full
    with pytest.raises(DescriptorError,
                       match=r"subset\.csv: class names appear more than once: 'archery' \(ids \[0, 2\]\)"):
        reindex_descriptors(labels, _csv(tmp_path / "subset.csv", ["archery", "bowling", "archery"]), desc,
                            tmp_path / "out.json")
    # A name twice in the full set is ambiguous only if the subset uses it.
    full_names = ["archery", "bowling", "archery"]
    assert subset_to_full_ids(full_names, ["bowling"]) == [1]
    with pytest.raises(DescriptorError, match=r"descriptors are ambiguous: 'archery' \(ids \[0, 2\]\)"):
        subset_to_full_ids(full_names, ["archery"])


def test_descriptors_must_cover_the_full_set(full, tmp_path):
    labels, _ = full
    desc = tmp_path / "short.json"
    desc.write_text(json.dumps({"0": ["a"], "1": ["b"]}))
    with pytest.raises(DescriptorError, match=r"short\.json: missing class ids \[2, 3\]"):
        reindex_descriptors(labels, _csv(tmp_path / "subset.csv", ["archery"]), desc, tmp_path / "out.json")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        reindex_descriptors(tmp_path / "nope.csv", labels, desc, tmp_path / "out.json")
