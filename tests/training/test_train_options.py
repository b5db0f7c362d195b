"""``medscreen train``'s numeric options are checked by argparse: a usage error (exit 2) saying what is allowed.

``--epochs 0`` had trained nothing and registered the untrained networks as a new version, ``--limit -5`` had
silently become 2 films per class, ``--folds 1`` had ended in a traceback and ``--folds 0`` had meant the default.
"""

from __future__ import annotations

import pytest

from medscreen.cli import build_parser


def _parse(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["train", "chest-xray", *options])
    return int(stopped.value.code or 0), capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--folds", "1", "argument --folds: must be 2 or more, got 1 (cross-validation needs at least 2 folds)"),
        ("--folds", "0", "argument --folds: must be 2 or more, got 0"),
        ("--epochs", "0", "argument --epochs: must be 1 or more, got 0 (an untrained model would be registered)"),
        ("--limit", "0", "argument --limit: must be 1 or more, got 0 (omit --limit to use all the data)"),
        ("--limit", "-5", "argument --limit: must be 1 or more, got -5"),
        ("--epochs", "two", "argument --epochs: 'two' is not a whole number"),
    ],
)
def test_out_of_range_options_are_usage_errors(capsys: pytest.CaptureFixture[str], option: str, value: str, said: str) -> None:
    code, line = _parse(capsys, option, value)
    assert code == 2
    assert line.startswith("medscreen train: error: ") and said in line


def test_omitted_options_keep_the_task_defaults_and_no_limit() -> None:
    args = build_parser().parse_args(["train", "chest-xray"])
    assert (args.epochs, args.folds, args.limit) == (None, None, None)
    args = build_parser().parse_args(["train", "chest-xray", "--epochs", "1", "--folds", "2", "--limit", "1"])
    assert (args.epochs, args.folds, args.limit) == (1, 2, 1)


def test_help_says_what_omitting_limit_means(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: no limit, all the data)" in text and "folds, 2 or more" in text and "epochs, 1 or more" in text
