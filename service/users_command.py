"""``medscreen users ...``: add accounts, list them, set passwords and roles, disable, enable and unlock them.

The first admin is not made here: ``medscreen serve`` creates it on an empty database (``ensure_admin``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.errors import UnknownUser, UserError
from service.settings import Settings
from service.tables import ROLES

__all__ = ["add_commands", "cli_actor"]


def add_commands(subparsers: Any) -> None:
    users = subparsers.add_parser("users", help="manage user accounts and roles")
    users.set_defaults(needs_database=True)
    commands = users.add_subparsers(dest="users_command", required=True, metavar="USERS_COMMAND")

    add = commands.add_parser("add", help="add a user; prints a generated password unless --password-stdin")
    add.add_argument("username")
    add.add_argument("--role", action="append", required=True, choices=ROLES, dest="roles", help="a role (repeatable)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(func=add_user)

    listing = commands.add_parser("list", help="list users and their roles")
    listing.set_defaults(func=list_users)

    password = commands.add_parser("set-password", help="set a user's password (signs out their tokens)")
    password.add_argument("username")
    password.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (without it: prompts twice on the terminal)",
    )
    password.set_defaults(func=set_user_password)

    roles = commands.add_parser("set-roles", help="replace a user's roles (takes effect on their next request)")
    roles.add_argument("username")
    roles.add_argument(
        "--role", action="append", required=True, choices=ROLES, dest="roles", help="a role (repeatable)"
    )
    roles.set_defaults(func=set_user_roles)

    for name, active in (("disable", False), ("enable", True)):
        toggle = commands.add_parser(name, help=f"{name} an account (its history stays in the audit log)")
        toggle.add_argument("username")
        toggle.set_defaults(func=set_user_active, active=active)

    unlock = commands.add_parser("unlock", help="lift a login lock (too many wrong passwords) before it expires")
    unlock.add_argument("username")
    unlock.set_defaults(func=unlock_user)


def _session_factory(settings: Settings) -> sessionmaker[Session]:
    # The schema is brought up to date by the root before a command with needs_database runs.
    from service.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.resolved_database_url))


def cli_actor() -> str:
    """The audit actor of a command run on the server (``users``, ``export-training``): ``cli:<login>``."""
    try:
        login = os.getlogin()
    except OSError:
        login = getpass.getuser()
    return f"cli:{login}"


class _PasswordNotRead(UserError):
    """No password came: no terminal to prompt on, end of input (Ctrl-D) or Ctrl-C (``exit_code`` 130)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _read_password(from_stdin: bool) -> str:
    """The new password: the first line of stdin with ``--password-stdin``, else typed twice at the terminal.

    Without a terminal (a script, ssh without -t) there is no prompt; as ``docker login`` does, the command says
    to pipe the password with ``--password-stdin`` instead of reading it with echo from whatever stdin is (getpass
    had ended in an EOFError traceback)."""
    try:
        if from_stdin:
            line = sys.stdin.readline()
            if not line:
                raise _PasswordNotRead("no password on stdin (--password-stdin reads its first line)")
            return line.rstrip("\r\n")
        if not sys.stdin.isatty():
            raise _PasswordNotRead("no terminal to prompt on; pipe the password with --password-stdin")
        first = getpass.getpass("new password: ")
        if first != getpass.getpass("repeat password: "):
            raise UserError("the two passwords differ")
        return first
    except EOFError:
        raise _PasswordNotRead("cancelled (end of input)") from None
    except KeyboardInterrupt:
        raise _PasswordNotRead("cancelled", exit_code=130) from None


def _exit_code(error: UserError) -> int:
    return error.exit_code if isinstance(error, _PasswordNotRead) else 1


def add_user(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import session_scope
    from service.users import create_user, generate_password

    generated = not args.password_stdin
    try:
        password = generate_password() if generated else _read_password(True)
        with session_scope(_session_factory(settings)) as session:
            create_user(session, args.username, password, args.roles, actor=cli_actor())
    except UserError as error:
        print(f"medscreen users add: {error}", file=sys.stderr)
        return _exit_code(error)
    print(f"added {args.username} ({', '.join(sorted(set(args.roles)))})")
    if generated:
        print(f"password: {password}")
    return 0


def list_users(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import session_scope
    from service.users import list_users as users_in

    with session_scope(_session_factory(settings)) as session:
        for user in users_in(session):
            state = "active" if user.is_active else "disabled"
            print(f"{user.username}\t{','.join(sorted(user.roles))}\t{state}\t{user.created_at.isoformat()}")
    return 0


def set_user_password(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import session_scope
    from service.users import get_user, set_password

    factory = _session_factory(settings)
    try:
        # The account is looked up before the prompt: a mistyped name had been asked for a password twice first.
        with session_scope(factory) as session:
            if get_user(session, args.username) is None:
                raise UnknownUser(f"no user {args.username!r}")
        password = _read_password(args.password_stdin)
        with session_scope(factory) as session:
            set_password(session, args.username, password, actor=cli_actor())
    except UserError as error:
        print(f"medscreen users set-password: {error}", file=sys.stderr)
        return _exit_code(error)
    print(f"password of {args.username} set")
    return 0


def set_user_roles(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import session_scope
    from service.users import set_roles

    try:
        with session_scope(_session_factory(settings)) as session:
            set_roles(session, args.username, args.roles, actor=cli_actor())
    except UserError as error:
        print(f"medscreen users set-roles: {error}", file=sys.stderr)
        return 1
    print(f"roles of {args.username}: {', '.join(sorted(set(args.roles)))}")
    return 0


def set_user_active(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import session_scope
    from service.users import set_active

    try:
        with session_scope(_session_factory(settings)) as session:
            set_active(session, args.username, args.active, actor=cli_actor())
    except UserError as error:
        print(f"medscreen users {'enable' if args.active else 'disable'}: {error}", file=sys.stderr)
        return 1
    print(f"{args.username} {'enabled' if args.active else 'disabled'}")
    return 0


def unlock_user(args: argparse.Namespace, settings: Settings) -> int:
    from service.audit import record_audit
    from service.db import session_scope
    from service.login_throttle import unlock_account

    with session_scope(_session_factory(settings)) as session:
        lifted = unlock_account(session, args.username)
        record_audit(session, cli_actor(), "user.unlock", "user", args.username, {"was_locked": lifted})
    print(f"{args.username} {'unlocked' if lifted else 'was not locked'}")
    return 0
