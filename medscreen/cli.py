"""The ``medscreen`` command line: ``serve`` plus the commands each package contributes.

Each module in :data:`COMMAND_MODULES` exposes ``add_commands(subparsers)``; a command's handler is
``func(args, settings) -> int``. Heavy imports (torch, MLflow) happen inside the handlers so that
``medscreen --help`` stays fast and serving never pulls in training code.

The root prepares what a command declares with ``set_defaults``:

- ``needs_home`` (default True; or a function of the parsed arguments): the command keeps data under
  ``MEDSCREEN_HOME``. Which home is printed on
  stderr; a home that does not exist yet is created only by ``serve`` or when ``--create-home`` is given, so a
  command run from the wrong folder stops instead of filling a new, empty database.
- ``needs_database`` (or a function of the parsed arguments): the schema of every package is brought up to date first, so no package has to know the
  others' migration branches.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pwd
import re
import signal
import sys
import threading
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medscreen.home_lock import HomeInUse
from medscreen.listen_ports import PortInUse
from medscreen.logging_config import configure_logging
from medscreen.version import installed_version
from service.errors import DatabaseFromNewerRelease
from service.file_modes import entries_of_other_accounts, owner_only_files, tighten_home
from service.settings import Settings

__all__ = ["main", "run_command", "build_parser", "COMMAND_MODULES", "HomeMissing"]

COMMAND_MODULES = (
    "medscreen.serve_command",
    "medscreen.worker_command",
    "service.users_command",
    "inference.cli",
    "training.cli",
    "training.retrain_cli",
    "quality.cli",
    "screening.cli",
)
# Commands allowed to make a new home without being asked: starting the service is how an install begins.
CREATES_HOME = frozenset({"serve"})
# Commands that do not start with a MEDSCREEN_ name that is no setting (the others warn): a misspelt
# MEDSCREEN_DICOM_ALLOWED_AE had left the service accepting any calling AE, without a word.
STOPS_ON_UNKNOWN_VARIABLE = frozenset({"serve"})


class HomeMissing(Exception):
    """The command needs MEDSCREEN_HOME, which does not exist, and was not asked to create it."""


class HomeOfAnotherAccount(Exception):
    """MEDSCREEN_HOME, or entries in it, belong to another account than the one the command runs as."""


class CommandParser(argparse.ArgumentParser):
    """argparse, with an unknown option given before a command name reported as such.

    Plain argparse had answered ``medscreen --bogus`` with "the following arguments are required: COMMAND": the
    missing command is checked before unknown options are."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        if self._subparsers is not None:
            self._refuse_unknown_options_before_the_command(argv)
        return super().parse_known_args(argv, namespace)

    def _refuse_unknown_options_before_the_command(self, argv: list[str]) -> None:
        known = self._option_string_actions
        for arg in argv:
            if arg == "--" or not arg.startswith("-") or self._negative_number_matcher.match(arg):
                return  # the command (or a value) comes first: what follows is the command's to judge
            name = arg.split("=", 1)[0]
            if name in known or (name.startswith("--") and any(option.startswith(name) for option in known)):
                continue
            self.error(f"unrecognized arguments: {arg}")


class _SubcommandParser(CommandParser):
    """The parser of a command (``serve``, ``users add``): what it does not know is refused under its own usage,
    not handed back up to the root (``medscreen serve --bogus`` had shown the top-level usage)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="medscreen",
        description="medscreen: AI decision support for radiology triage and rare-disease screening. "
        "Settings come from MEDSCREEN_* environment variables (see README).",
    )
    create_home_help = "create MEDSCREEN_HOME if it does not exist (only `serve` creates it unasked)"
    parser.add_argument("--create-home", action="store_true", help=create_home_help)
    parser.add_argument("--version", action="version", version=f"medscreen {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_SubcommandParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    for command in _parsers_below(subparsers):
        # Also accepted after the command name; SUPPRESS keeps a flag given before it.
        command.add_argument("--create-home", action="store_true", default=argparse.SUPPRESS, help=create_home_help)
    return parser


def _parsers_below(subparsers: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:  # type: ignore[type-arg]
    """Every command and sub-command parser (``users``, ``users add``, ...)."""
    found = []
    for parser in subparsers.choices.values():
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.extend(_parsers_below(action))
    return found


def prepare_home(args: argparse.Namespace, settings: Settings) -> None:
    """Print which home the command uses; create it only for ``serve`` or ``--create-home``."""
    needs_home = getattr(args, "needs_home", True)
    if not (needs_home(args) if callable(needs_home) else needs_home):
        return
    home = settings.home
    if not _reachable_folder(home):
        if home.exists():
            raise HomeMissing(f"MEDSCREEN_HOME {home} exists but is not a folder")
        if args.command not in CREATES_HOME and not getattr(args, "create_home", False):
            raise HomeMissing(
                f"MEDSCREEN_HOME {home} does not exist. Set MEDSCREEN_HOME to the data folder of your installation "
                f"(where `medscreen serve` keeps its database), or pass --create-home to start a new one there."
            )
        try:
            home.mkdir(parents=True)
        except PermissionError as exc:
            parent = next(folder for folder in home.parents if folder.exists())
            raise HomeOfAnotherAccount(
                f"MEDSCREEN_HOME {home} cannot be created by {_account(os.geteuid())}: {exc.strerror} in "
                f"{parent}; create it for this account (mkdir -p {home}; chown {_login_name(os.geteuid())} {home})"
            ) from None
        sys.stderr.write(f"medscreen: created home {home}\n")
    else:
        sys.stderr.write(f"medscreen: home {home}\n")
    foreign = entries_of_other_accounts(home)
    if foreign:
        raise HomeOfAnotherAccount(_foreign_entries_line(home, foreign))
    tighten_home(home)


def _reachable_folder(home: Path) -> bool:
    """Whether ``home`` is a folder; a folder above it that this account may not pass through is one line, exit 2:
    it had been a PermissionError traceback from the first stat (a home restored under root's 0700 folder)."""
    try:
        return home.is_dir()
    except PermissionError:
        # The topmost folder refusing passage: the ones below it cannot even be looked at.
        blocked = next((folder for folder in reversed(home.parents) if not os.access(folder, os.X_OK)), home.parent)
        try:
            owner = f" (owned by {_account(blocked.stat().st_uid)})"
        except OSError:
            owner = ""
        raise HomeOfAnotherAccount(
            f"MEDSCREEN_HOME {home} cannot be reached by {_account(os.geteuid())}: {blocked}{owner} does not let this "
            f"account through; give it access (chmod o+x {blocked}) or set MEDSCREEN_HOME to a folder it can reach"
        ) from None


def _login_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _account(uid: int) -> str:
    return f"{_login_name(uid)} (uid {uid})"


def _foreign_entries_line(home: Path, foreign: list[tuple[Path, int]]) -> str:
    names = [str(path) if path == home else path.name for path, _ in foreign]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    owners = sorted({owner for _, owner in foreign})
    me = _account(os.geteuid())
    return (
        f"MEDSCREEN_HOME {home}: {shown} belong to {', '.join(_account(uid) for uid in owners)}, not to {me}, "
        f"the account this command runs as, which cannot write them: give the home to this account "
        f"(chown -R {_login_name(os.geteuid())} {home}), or run medscreen as the account that owns it"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; its exit code. Ctrl-C ends any command with one line on stderr and exit code 130 (128 +
    SIGINT, as a shell reports a command the signal ended): ``score`` and ``screen-emr`` had printed a traceback.
    What a command had written stays whole: ``score``'s lines are written and flushed one at a time, ``screen-emr``
    keeps each finished partition (renamed into place) and resumes from them when run again."""
    try:
        with interrupts_not_swallowed():
            return _main(argv)
    except KeyboardInterrupt:
        sys.stderr.write("medscreen: interrupted\n")
        return 130


@contextlib.contextmanager
def interrupts_not_swallowed() -> Iterator[None]:
    """A Ctrl-C that lands in Python code called back from C (pydantic-core building a validator as a module loads) is
    'ignored' there: Python prints "Exception ignored in: ..." with a traceback and goes on, and `screen-emr` ran to
    the end after it (seen in CI). Here such an interrupt is sent again a moment later, without the print."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if (unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt)
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            # Sent from another thread a moment later: raised here, inside the hook, it would be ignored again.
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _main(argv: Sequence[str] | None) -> int:
    # Before anything is created: the database, spool and quarantine hold patient data (service/file_modes.py).
    owner_only_files()
    # MLflow draws a progress bar for every model copied out of the registry (a few local files, milliseconds):
    # on `score --quiet` it was the only bar left and in the service's log it is noise. A site may turn it on.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = _settings()
    stops = args.command in STOPS_ON_UNKNOWN_VARIABLE
    unknown = _unknown_variables(stops=stops)
    if not stops:
        sys.stderr.writelines(f"medscreen {args.command}: warning: {line}\n" for line in unknown)
    problems = (settings if isinstance(settings, list) else []) + (unknown if stops else [])
    if isinstance(settings, list) or problems:
        sys.stderr.writelines(f"medscreen {args.command}: {problem}\n" for problem in problems)
        return 2
    configure_logging(settings.log_level)
    try:
        return run_command(args, settings)
    except (HomeMissing, HomeOfAnotherAccount, HomeInUse, PortInUse, DatabaseFromNewerRelease) as exc:
        sys.stderr.write(f"medscreen {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"medscreen {args.command}: interrupted\n")
        return 130


def _settings() -> Settings | list[str]:
    """The settings from the environment, or what is wrong with them: one line per variable, named as the operator
    set it (``MEDSCREEN_HTTP_PORT``, not the field), without the value (it may be a secret). A wrong value had been a
    pydantic traceback naming the field, with exit code 1.

    pydantic-settings stops at the first list or mapping not written as JSON (``SettingsError``), before it checks
    any other variable: such a variable is set aside and the settings read again, so that one run names every
    wrong variable (the others had shown only once the list was fixed)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    problems: dict[str, list[str]] = {}
    set_aside: dict[str, str] = {}
    try:
        while True:
            try:
                settings = Settings()
            except ValidationError as exc:
                for err in exc.errors(include_input=False):
                    problems.setdefault(_variable(str(err["loc"][0]) if err["loc"] else ""), []).append(err["msg"])
                break
            except SettingsError as exc:  # a list or mapping that is not JSON: pydantic-settings names the field only
                field = re.search(r'field "([^"]+)"', str(exc))
                name = _variable(field.group(1)) if field else "a MEDSCREEN_ variable"
                if isinstance(exc.__cause__, json.JSONDecodeError):
                    problems.setdefault(name, []).append(_not_json(field.group(1) if field else ""))
                else:
                    problems.setdefault(name, []).append(str(exc.__cause__ or exc))
                key = next((key for key in os.environ if key.upper() == name), None)
                if key is None:
                    break
                set_aside[key] = os.environ.pop(key)
                continue
            if not problems:
                return settings
            break
    finally:
        os.environ.update(set_aside)
    return [f"{name}: {'; '.join(messages)}" for name, messages in problems.items()]


def _unknown_variables(*, stops: bool) -> list[str]:
    """One line per ``MEDSCREEN_*`` name that is no setting, with the setting it most likely meant: said as an error
    where the command ``stops`` on it, as a warning (the variable is ignored) otherwise."""
    from service.settings import unknown_variables

    lines = []
    for name, meant in unknown_variables(os.environ).items():
        guess = f"; did you mean {meant}?" if meant else ""
        lines.append(f"{name}: not a medscreen setting{guess}" if stops
                     else f"{name} is not a medscreen setting and is ignored{guess}")
    return lines


def _not_json(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is not None and typing.get_origin(info.annotation) is dict:
        return 'not JSON; a mapping is written as JSON, e.g. {"CT": 120, "MR": 90}'
    return 'not JSON; a list is written as JSON, e.g. ["ORTHANC", "MODALITY1"]'


def _variable(field: str) -> str:
    return f"MEDSCREEN_{field.upper()}" if field else "a MEDSCREEN_ variable"


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Prepare what the parsed command needs (its home, the schema of every package) and run its handler."""
    prepare_home(args, settings)
    needs_database = getattr(args, "needs_database", False)
    if needs_database(args) if callable(needs_database) else needs_database:
        from medscreen.schema import migrate_all

        migrate_all(settings.resolved_database_url)
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
