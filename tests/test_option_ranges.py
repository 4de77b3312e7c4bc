"""Every numeric option is range-checked before any work, with one clear line.

The named cases first (each once refused with a traceback, a silent acceptance or a run the machine killed), then
a property test per command: hypothesis draws option values, in range and out of it, and each run must end in
exit 0 or in exactly one `error:` line with exit 1 — never a traceback — and must leave every file outside its
named output as it was.
"""

from __future__ import annotations

import collections
import itertools
import shutil
from pathlib import Path

import pytest
from clitools import invoke, refused, tiny_train_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_overwrite import digest

#: Few, deterministic examples: each is a real CLI run.
COMMAND_PROPERTY = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_fresh = itertools.count()
EXITS: collections.Counter[tuple[str, int]] = collections.Counter()  # (command, exit code) over all drawn runs


@pytest.fixture(scope="module")
def inputs(cli_env: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The inputs every drawn command reads, in one folder whose digest must never change; outputs go elsewhere."""
    root = tmp_path_factory.mktemp("inputs")
    for name in ("data", "scgpt", "store", "run"):
        source = cli_env[name]
        target = root / source.name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    outputs = tmp_path_factory.mktemp("outputs")
    invoke("generate", root / "run", "--cells", "4", "--steps", "1", "--device", "cpu")  # predictions to score
    return {
        "root": root,
        "data": root / "data.h5ad",
        "scgpt": root / "scgpt",
        "store": root / "store.zarr",
        "run": root / "run",
        "outputs": outputs,
    }


def new_output(inputs: dict[str, Path], suffix: str = "") -> Path:
    return inputs["outputs"] / f"out{next(_fresh)}{suffix}"


def clean_exit(args: list[object], inputs: dict[str, Path]) -> None:
    """Exit 0, or exit 1 with exactly one `error:` line and no traceback; the inputs untouched either way."""
    before = digest(inputs["root"])
    result = invoke(*args)
    EXITS[str(args[0]), result.exit_code] += 1
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert (result.exit_code, len(errors)) in ((0, 0), (1, 1)), result.output
    assert digest(inputs["root"]) == before


# --- the named cases -----------------------------------------------------------------------------------------


def _train(inputs: dict[str, Path], *extra: object) -> list[object]:
    out = new_output(inputs)
    return [*tiny_train_args(inputs["data"], inputs["store"], out, steps=2, checkpoint_every=2), *extra]


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--lr", "-1", "--lr must be a number in (0, 1], got -1.0"),
        ("--workers", "-1", "--workers must be an integer in [0, 64], got -1"),
        ("--batch-size", "100000", "--batch-size 100000 is larger than the 108 training cells"),
        ("--fold", "99", "--fold must be an integer in [0, 9], got 99"),
        ("--steps", "0", "--steps must be an integer ≥ 1"),
        ("--checkpoint-every", "0", "--checkpoint-every must be an integer ≥ 1"),
        ("--latent-first-prob", "1.5", "--latent-first-prob must be a number in [0, 1]"),
        ("--seed", "-3", "--seed must be an integer in [0, 4294967295]"),
    ],
)
def test_train_option_out_of_range(inputs: dict[str, Path], option: str, value: str, match: str) -> None:
    refused(*_train(inputs, option, value), match=match)


def test_fold_of_a_fixed_split_must_be_zero(inputs: dict[str, Path]) -> None:
    refused(*_train(inputs, "--split", "combosciplex", "--fold", "1"), match="--fold must be an integer in [0, 0]")


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--guidance-expr", "-5", "--guidance-expr must be a number in [0, 20], got -5.0"),
        ("--guidance-latent", "2", "need a run trained with perturbation-label dropout"),
        ("--cells", "0", "--cells must be 'matched' or a number of cells"),
        ("--steps", "0", "--steps must be an integer in [1, 10000]"),
        ("--batch-size", "0", "--batch-size must be an integer in [1, 65536]"),
    ],
)
def test_generate_option_out_of_range(inputs: dict[str, Path], option: str, value: str, match: str) -> None:
    refused("generate", inputs["run"], "--out", new_output(inputs, ".h5ad"), option, value, match=match)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--genes", "1", "--genes must be an integer ≥ 2"),
        ("--batch-size", "0", "--batch-size must be an integer in [1, 65536]"),
        ("--norm-cells", "0", "--norm-cells must be an integer ≥ 1"),
        ("--shard-cells", "-4", "--shard-cells must be an integer in [1, 65536]"),
    ],
)
def test_extract_option_out_of_range(inputs: dict[str, Path], option: str, value: str, match: str) -> None:
    refused("extract", inputs["data"], "--scgpt", inputs["scgpt"], "--out", new_output(inputs), option, value,
            match=match)  # fmt: skip


# --- the property tests ----------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
SEEDS = ([0, 7, 2**32 - 1], [-1, 2**40])


@st.composite
def options(draw: st.DrawFn, **spec: tuple[list[object], list[object]]) -> list[object]:
    """`--name value` pairs: every option in range, then up to two of them (maybe none) replaced by values out
    of range, so that both runs that go through and runs that are refused are drawn."""
    values = {name: draw(st.sampled_from(valid)) for name, (valid, _) in spec.items()}
    for name in draw(st.lists(st.sampled_from(sorted(spec)), max_size=2, unique=True)):
        values[name] = draw(st.sampled_from(spec[name][1]))
    return [item for name, value in values.items() for item in (f"--{name.replace('_', '-')}", value)]


@COMMAND_PROPERTY
@given(
    options(
        steps=([1, 3], [0, -1, -(2**40)]),
        batch_size=([2, 8], [1, 0, -1, 10**6]),
        lr=([1e-3, 1.0], [0.0, -1.0, 2.0, NAN, INF]),
        workers=([0], [-1, 65]),
        checkpoint_every=([1, 5], [0, -1]),
        fold=([0, 9], [10, -1, 2**40]),
        latent_first_prob=([0.0, 0.4, 1.0], [-0.1, 1.5, NAN]),
        seed=SEEDS,
    )
)
def test_train_options(inputs: dict[str, Path], drawn: list[object]) -> None:
    clean_exit([*_train(inputs), *drawn], inputs)


@COMMAND_PROPERTY
@given(
    options(
        steps=([1, 2], [0, -1, 10**5]),
        batch_size=([1, 64], [0, -1, 10**6]),
        cells=(["2", "matched"], ["0", "-1", "abc", "10000000"]),
        guidance_expr=([1.0], [-5.0, NAN, INF, 0.5]),  # 0.5 is in range, but this run learned no null label
        seed=SEEDS,
    )
)
def test_generate_options(inputs: dict[str, Path], drawn: list[object]) -> None:
    clean_exit(["generate", inputs["run"], "--out", new_output(inputs, ".h5ad"), "--device", "cpu", *drawn], inputs)


@COMMAND_PROPERTY
@given(
    options(
        genes=([2, 24, 10**6], [1, 0, -1]),
        batch_size=([1, 32], [0, -1, 10**6]),
        norm_cells=([1, 10**6], [0, -1]),
        shard_cells=([7, 65_536], [0, -1, 10**6]),
        seed=SEEDS,
    )
)
def test_extract_options(inputs: dict[str, Path], drawn: list[object]) -> None:
    out = new_output(inputs)
    clean_exit(["extract", inputs["data"], "--scgpt", inputs["scgpt"], "--out", out, "--device", "cpu", *drawn], inputs)


@COMMAND_PROPERTY
@given(
    st.sampled_from(["norman", "combosciplex", "other"]),
    options(scale=([0.001, 0.002], [0.0, -1.0, 2.0, NAN, INF]), min_cells=([2, 5], [1, 0, -1, 10**5]), seed=SEEDS),
)
def test_simulate_options(inputs: dict[str, Path], kind: str, drawn: list[object]) -> None:
    clean_exit(["simulate", kind, "--out", new_output(inputs, ".h5ad"), *drawn], inputs)


@COMMAND_PROPERTY
@given(options(d_model=([8, 16], [0, -1, 10**5, 9]), layers=([1, 2], [0, -1, 100]), heads=([1, 2], [0, -1, 100])))
def test_toy_scgpt_options(inputs: dict[str, Path], drawn: list[object]) -> None:
    clean_exit(["toy-scgpt", "--out", new_output(inputs), "--genes-from", inputs["data"], *drawn], inputs)


@settings(COMMAND_PROPERTY, max_examples=8)  # a run that goes through runs cell-eval
@given(options(threads=([1, 2], [0, -1, 300]), seed=SEEDS))
def test_evaluate_options(inputs: dict[str, Path], drawn: list[object]) -> None:
    args = ["evaluate", inputs["run"], "--out", new_output(inputs), "--profile", "minimal", "--baselines", "control"]
    clean_exit([*args, *drawn], inputs)


@settings(COMMAND_PROPERTY, max_examples=6)
@given(options(timeout=([0.5, 5.0], [0.0, -1.0, NAN, INF, 1e5])))
def test_fetch_scgpt_options(inputs: dict[str, Path], drawn: list[object]) -> None:
    source = "http://127.0.0.1:9/scGPT_human"  # the discard port: a run that goes through fails to connect at once
    clean_exit(["fetch-scgpt", "--out", new_output(inputs), "--source", source, *drawn], inputs)


def test_the_draws_included_runs_that_went_through_and_refusals() -> None:
    """Runs after the property tests above (file order): each command was both run and refused."""
    for command in ("train", "generate", "extract", "simulate", "toy-scgpt", "evaluate"):
        assert EXITS[command, 0] and EXITS[command, 1], {k: v for k, v in EXITS.items() if k[0] == command}
