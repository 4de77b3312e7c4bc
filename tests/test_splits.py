import pytest
from factories import tiny_gears_adata

from ccfm.data.conditions import parse_condition
from ccfm.data.loading import from_anndata
from ccfm.data.splits import COMBOSCIPLEX_TEST, Split, make_split
from ccfm.errors import CCFMError


def _norman_like() -> dict:
    """40 singles and 60 doubles over them, like a small Norman."""
    genes = [f"g{i}" for i in range(40)]
    labels = ["ctrl"] + genes + [f"{genes[i]}+{genes[(i * 7 + 3) % 40]}" for i in range(40)]
    labels += [f"{genes[i]}+{genes[(i * 11 + 5) % 40]}" for i in range(20)]
    perts = {}
    for lab in labels:
        p = parse_condition(lab)
        perts[p.label] = p
    return perts


PERTS = _norman_like()
DOUBLES = {lab for lab, p in PERTS.items() if p.is_double}
SINGLES = {lab for lab, p in PERTS.items() if len(p.tokens) == 1}


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_additive_holds_out_doubles_only(fold: int) -> None:
    split = make_split(PERTS, "additive", seed=3, fold=fold)
    assert not set(split.train) & set(split.test)
    assert set(split.test) <= DOUBLES
    assert SINGLES <= set(split.train)
    assert len(split.test) == round(0.3 * len(DOUBLES))
    assert "ctrl" not in split.train + split.test


def test_folds_differ_and_seed_reproduces() -> None:
    a = make_split(PERTS, "additive", seed=3, fold=0)
    assert make_split(PERTS, "additive", seed=3, fold=0) == a
    assert make_split(PERTS, "additive", seed=3, fold=1).test != a.test
    assert make_split(PERTS, "additive", seed=4, fold=0).test != a.test


def test_holdout_removes_singles_of_held_out_doubles() -> None:
    split = make_split(PERTS, "holdout", seed=1)
    held_doubles = set(split.test) & DOUBLES
    assert held_doubles
    for lab in held_doubles:
        for token in PERTS[lab].tokens:
            assert token in split.test and token not in split.train


def test_additive_keeps_singles_of_held_out_doubles_in_train() -> None:
    split = make_split(PERTS, "additive", seed=1)
    for lab in split.test:
        assert all(t in split.train for t in PERTS[lab].tokens)


def test_unseen_single_holds_out_every_double_with_the_gene() -> None:
    split = make_split(PERTS, "unseen-single", seed=2)
    held_genes = {PERTS[lab].tokens[0] for lab in split.test if lab in SINGLES}
    assert held_genes
    for lab in split.train:
        assert not held_genes & set(PERTS[lab].tokens)


def test_json_round_trip() -> None:
    split = make_split(PERTS, "holdout", seed=5, fold=2)
    assert Split.from_json(split.to_json()) == split


def test_combosciplex_fixed_set() -> None:
    labels = list(COMBOSCIPLEX_TEST) + ["control+Givinostat", "Givinostat+Crizotinib", "control+control"]
    perts = {parse_condition(lab).label: parse_condition(lab) for lab in labels}
    split = make_split(perts, "combosciplex")
    assert set(split.test) == {parse_condition(lab).label for lab in COMBOSCIPLEX_TEST}
    assert split.train == ("Crizotinib+Givinostat", "Givinostat")


def test_user_file_and_unknown_conditions(tmp_path) -> None:
    perts = from_anndata(tiny_gears_adata()).perturbations
    good = tmp_path / "test.txt"
    good.write_text("G002+G001\nctrl+G004\n")
    split = make_split(perts, "file", test_file=good)
    assert split.test == ("G001+G002", "G004")
    bad = tmp_path / "bad.txt"
    bad.write_text("G001+G999\n")
    with pytest.raises(CCFMError, match="not in the data.*G001\\+G999"):
        make_split(perts, "file", test_file=bad)
    with pytest.raises(CCFMError, match="unknown split 'random'"):
        make_split(perts, "random")
