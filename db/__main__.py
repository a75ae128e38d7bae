"""``python -m db upgrade | stats | export [--pairs] --format jsonl|csv|hf DEST | import-prompts FILE | clean-runs [--yes]
| pairs make [--versions A B] [--limit N] | pairs stats | users add|disable|enable|reset-password|role|list | audit``.

``stats`` also lists what runs left under ``$RLHF_ARTIFACTS`` (unfinished ``.work-*`` runs, hidden
``.*.tmp-*`` / ``.*.old-*`` saves) with their sizes; ``clean-runs --yes`` (``make clean-runs``)
removes those whose owner is dead."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import db
from common.errors import cli_entry, setup_logging
from db.engine import describe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m db", description="The feedback database: migrate, count, export, import."
    )
    p.add_argument(
        "--url", default=None, help="database URL (default: $RLHF_DB_URL, else sqlite:///data/feedback.sqlite)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="create the database or migrate it to the newest schema")
    sub.add_parser(
        "stats", help="print counts as JSON, and the unfinished runs and temporary folders under $RLHF_ARTIFACTS"
    )
    cr = sub.add_parser(
        "clean-runs",
        help="list unfinished runs and temporary folders under $RLHF_ARTIFACTS; remove those whose owner is dead",
    )
    cr.add_argument("--yes", action="store_true", help="remove them (without it: only list what would go)")
    ex = sub.add_parser("export", help="export every judgement joined with its prompt and completion")
    ex.add_argument(
        "--format",
        choices=["jsonl", "csv", "hf"],
        default="jsonl",
        help="jsonl/csv: a file; hf: a `datasets` folder (load_from_disk)",
    )
    ex.add_argument("dest", type=Path, help="output file (jsonl/csv) or folder (hf)")
    ex.add_argument(
        "--pairs", action="store_true", help="export the pair judgements in TRL's preference format instead"
    )
    pairs = sub.add_parser("pairs", help="pairwise comparisons: make pairs to label, print their figures")
    pairs_sub = pairs.add_subparsers(dest="pairs_command", required=True)
    mk = pairs_sub.add_parser("make", help="pair two completions of one prompt (same policy, or two versions)")
    mk.add_argument(
        "--versions", type=int, nargs=2, metavar=("A", "B"), help="one completion of version A against one of B"
    )
    mk.add_argument("--limit", type=int, default=None, help="make at most this many new comparisons")
    pairs_sub.add_parser("stats", help="print pair counts, agreement, position bias and win rates as JSON")
    im = sub.add_parser("import-prompts", help="add custom prompts from a text file (one per line)")
    im.add_argument("file", type=Path, help="UTF-8 text file; blank lines skipped, duplicates dropped")
    add_account_commands(sub)
    return p


PASSWORD_ENV = "RLHF_NEW_PASSWORD"


def add_account_commands(sub) -> None:
    """``users add|disable|enable|reset-password|role|list`` and ``audit``. Passwords are never arguments
    (they would land in the shell history and in process lists): a prompt, one line on stdin
    (``--password-stdin``), or ``$RLHF_NEW_PASSWORD``."""
    users = sub.add_parser("users", help="team accounts for the labelling app: add, disable, reset passwords, list")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    how = f"the password is asked for (or read from one line of stdin with --password-stdin, or from ${PASSWORD_ENV})"
    add = users_sub.add_parser("add", help=f"create an account; {how}")
    add.add_argument("name", help="the account's name (1-64 characters, compared ignoring case)")
    add.add_argument("--role", choices=["admin", "labeller"], default="labeller", help="default: labeller")
    reset = users_sub.add_parser("reset-password", help=f"set a new password (also for a labeller without one); {how}")
    reset.add_argument("name")
    for p in (add, reset):
        p.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    for name, text in (("disable", "stop an account from signing in"), ("enable", "let a disabled account in again")):
        users_sub.add_parser(name, help=text).add_argument("name")
    role = users_sub.add_parser("role", help="make an account an admin or a labeller")
    role.add_argument("name")
    role.add_argument("role", choices=["admin", "labeller"])
    users_sub.add_parser("list", help="every account: name, role, whether it has a password, disabled or not")
    ses = users_sub.add_parser("sessions", help="signed-in browser sessions still live (never their tokens)")
    ses.add_argument("name", nargs="?", default=None, help="only this account's")
    users_sub.add_parser(
        "sign-out", help="end every live session of an account (its browsers must sign in again)"
    ).add_argument("name")
    au = sub.add_parser("audit", help="the audit trail, newest first: sign-ins, failed attempts, exports, imports, ...")
    au.add_argument("--limit", type=int, default=50, help="rows to print (default 50; 0 = all)")
    au.add_argument("--action", default=None, help="only this action (e.g. sign_in_failed)")
    au.add_argument("--actor", default=None, help="only rows of this name")
    au.add_argument("--json", action="store_true", help="one JSON object per line")


def cli_actor() -> str:
    """Who the audit trail names for a command: the operating-system user, as ``user@cli``."""
    import getpass

    try:
        return f"{getpass.getuser()}@cli"[:64]
    except Exception:  # no user name in this environment (a bare container)
        return "cli"


def read_new_password(*, from_stdin: bool) -> str:
    """The new password: one line of stdin, else ``$RLHF_NEW_PASSWORD``, else a prompt (typed twice)."""
    import getpass
    import os

    from common.errors import UserError

    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise UserError(
            "no password given, and there is no terminal to ask for one.",
            f"pipe it in with --password-stdin, or set ${PASSWORD_ENV}.",
        )
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ.", "type the same password twice.")
    return first


def run_account_command(args) -> int:
    """``python -m db users ...`` and ``python -m db audit``; every change is in the audit trail (client ``cli``)."""
    engine = db.connect(args.url)
    if args.command == "audit":
        rows = db.audit_events(engine, limit=args.limit or None, action=args.action, actor=args.actor)
        for r in rows:
            if args.json:
                print(json.dumps(r.as_dict(), sort_keys=True))
            else:
                mark = "ok     " if r.ok else "REFUSED"
                print(
                    f"{r.at:%Y-%m-%d %H:%M:%S}  {mark}  {r.action:<17}  {r.actor or '-':<16}  "
                    f"{r.target or '-':<20}  {r.client or '-':<15}  {r.detail or ''}".rstrip()
                )
        return 0
    by = cli_actor()
    cmd, name = args.users_command, getattr(args, "name", None)
    if cmd == "list":
        for a in db.list_accounts(engine):
            state = "disabled" if a.disabled_at else ("active" if a.has_password else "no password")
            print(f"{a.name:<24}  {a.role:<8}  {state:<11}  created {a.created_at:%Y-%m-%d}")
        return 0
    if cmd == "sessions":
        rows = db.live_sessions(engine, name)
        for r in rows:
            print(
                f"{r.id:>6}  {r.account:<24}  {r.client or '-':<15}  signed in {r.created_at:%Y-%m-%d %H:%M}  "
                f"last seen {r.last_seen_at:%Y-%m-%d %H:%M}  expires {r.expires_at:%Y-%m-%d %H:%M} UTC"
            )
        print(f"{len(rows)} live session{'s' if len(rows) != 1 else ''}")
        return 0
    if cmd == "sign-out":
        n = db.sign_out_everywhere(engine, name, by=by)
        print(f"ended {n} session{'s' if n != 1 else ''} of {name!r}: its browsers must sign in again")
        return 0
    if cmd == "add":
        db.add_account(engine, name, read_new_password(from_stdin=args.password_stdin), role=args.role, by=by)
        print(f"added the {args.role} account {name!r}")
    elif cmd == "reset-password":
        db.set_password(engine, name, read_new_password(from_stdin=args.password_stdin), by=by)
        print(f"set a new password for {name!r}")
    elif cmd == "disable":
        db.disable_account(engine, name, by=by)
        print(f"disabled {name!r}: it can no longer sign in; its judgements stay attributed to it")
    elif cmd == "enable":
        db.enable_account(engine, name, by=by)
        print(f"enabled {name!r}")
    elif cmd == "role":
        db.set_role(engine, name, args.role, by=by)
        print(f"{name!r} is now a {args.role}")
    return 0


def leftovers_summary() -> dict:
    """The unfinished runs and temporary folders under ``RLHF_ARTIFACTS``, for ``stats``."""
    from common.paths import artifacts_root, find_leftovers

    root = artifacts_root()
    items = find_leftovers(root)
    return {
        "root": str(root),
        "count": len(items),
        "total_mb": round(sum(i.size for i in items) / (1 << 20), 1),
        "removable_mb": round(sum(i.size for i in items if i.collectable) / (1 << 20), 1),
        "items": [i.as_dict(root) for i in items],
    }


def clean_runs(*, yes: bool) -> int:
    """List the leftovers; with ``yes`` remove those whose owner is dead (never a live run's)."""
    from common.paths import artifacts_root, find_leftovers, remove_leftovers

    root = artifacts_root()
    items = find_leftovers(root)
    for item in items:
        d = item.as_dict(root)
        state = "remove" if item.collectable else "keep  "
        print(f"{state} {d['size_mb']:>9.1f} MB  {item.kind:<14}  {d['path']}  (owner: {item.owner})")
    removable = [i for i in items if i.collectable]
    mb = sum(i.size for i in removable) / (1 << 20)
    if not yes:
        print(f"{len(removable)} of {len(items)} removable ({mb:.1f} MB) under {root}; run with --yes to remove them")
        return 0
    removed = remove_leftovers(removable)
    print(f"removed {len(removed)} of {len(items)} ({mb:.1f} MB) under {root}")
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command == "upgrade":
        engine = db.connect(args.url, upgrade=True)
        print(f"{describe(engine)} is at schema revision {db.current_revision(engine)}")
    elif args.command == "stats":
        engine = db.connect(args.url)
        out = db.stats(engine)
        out["artifacts_leftovers"] = leftovers_summary()
        print(json.dumps(out, indent=2, sort_keys=True))
    elif args.command == "clean-runs":
        return clean_runs(yes=args.yes)
    elif args.command == "export":
        engine = db.connect(args.url)
        out = (db.export_pairs if args.pairs else db.export_labels)(engine, args.format, args.dest)
        db.audit(engine, "export", actor=cli_actor(), client="cli", target=Path(out).name, detail=args.format)
        print(out)
    elif args.command == "pairs":
        engine = db.connect(args.url)
        if args.pairs_command == "make":
            mode = "versions" if args.versions else "same_policy"
            n = db.make_comparisons(engine, mode=mode, versions=args.versions, limit=args.limit)
            print(f"made {n} new comparison(s) ({mode})")
        else:
            print(json.dumps(db.pair_stats(engine), indent=2, sort_keys=True))
    elif args.command == "import-prompts":
        engine = db.connect(args.url)
        n = db.import_prompts(engine, args.file)
        db.audit(engine, "import", actor=cli_actor(), client="cli", target=args.file.name, detail=f"{n} new prompt(s)")
        print(f"added {n} new prompt(s)")
    elif args.command in ("users", "audit"):
        return run_account_command(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
