import pytest

from ccfm.data.conditions import CONTROL, Perturbation, parse_condition
from ccfm.errors import CCFMError


@pytest.mark.parametrize(
    ("label", "tokens"),
    [
        ("ctrl", ()),
        ("control", ()),
        ("control+control", ()),
        ("A+ctrl", ("A",)),
        ("ctrl+A", ("A",)),
        ("A", ("A",)),
        ("control+DrugX", ("DrugX",)),
        ("B+A", ("A", "B")),
        ("A+B", ("A", "B")),
        ("A+A", ("A",)),
    ],
)
def test_parse_condition_is_unordered_set(label: str, tokens: tuple[str, ...]) -> None:
    assert parse_condition(label).tokens == tokens


def test_orientations_are_the_same_perturbation() -> None:
    assert parse_condition("A+ctrl") == parse_condition("ctrl+A") == Perturbation(("A",))
    assert parse_condition("Panobinostat+Crizotinib").label == "Crizotinib+Panobinostat"
    assert parse_condition("ctrl") == CONTROL and CONTROL.label == "ctrl"


def test_dataset_control_label_fills_slots() -> None:
    assert parse_condition("non-targeting", control_label="non-targeting").is_control
    assert parse_condition("NT", control_label="NT").is_control


@pytest.mark.parametrize(("label", "message"), [("A+B+C", "3 tokens"), ("A++B", "empty token"), ("  ", "empty")])
def test_bad_labels_are_refused(label: str, message: str) -> None:
    with pytest.raises(CCFMError, match=message):
        parse_condition(label)
