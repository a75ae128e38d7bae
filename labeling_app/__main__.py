"""Start the labelling app with Streamlit: ``python -m labeling_app [--port N] [--create-db]``.

A thin wrapper over ``streamlit run labeling_app/server.py`` (the pages of ``app.py`` plus the
session cookie routes, docs/security.md) with settings for a closed network
(headless, no usage statistics, no file watcher). The database is ``RLHF_DB_URL``, the
profile ``RLHF_CONFIG`` (section ``label``), the access token ``RLHF_LABEL_TOKEN``.

Another ``--address`` than this machine's needs accounts (``python -m db users add NAME --role
admin``); without them the start is refused unless ``--insecure-open`` is given (docs/security.md).

Before Streamlit starts, the database is opened (and migrated): one that cannot be opened stops
the start with one line naming it and the fix. A missing database is created only at the default
path (``data/feedback.sqlite``) or with ``--create-db``; an existing one is never replaced. With
``label.identity_provider`` set, a missing Authlib or ``[auth]`` section of ``.streamlit/secrets.toml``
stops the start the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.config import describe, load_config
from common.errors import UserError, cli_entry
from labeling_app import runtime
from labeling_app.config import LabelConfig

APP = Path(__file__).resolve().parent / "app.py"
# app.py's pages plus the session cookie routes (an st.App that `streamlit run` serves with uvicorn)
SERVER = Path(__file__).resolve().parent / "server.py"


def streamlit_args(port: int, address: str, app: Path = SERVER) -> list[str]:
    """The ``streamlit run`` command line (also used by the browser test and the benchmark); ``app``
    is ``server.py`` (the pages and the session cookie routes) unless another script is given."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        # Streamlit runs a full gc.collect(2) after every script run by default: ~50 ms per judgement in this
        # process (profiled with py-spy), holding the GIL while the next item waits to be sent. Python's
        # own generational GC still runs.
        "--runner.postScriptGC",
        "false",
    ]


def open_database(*, create: bool = False) -> bool:
    """Open (and migrate) the database once before Streamlit starts, so a missing or broken one stops
    the start here with one line, not on a labeller's screen; creates it only when allowed. Returns
    whether it has accounts (:func:`db.accounts_enabled`)."""
    import db
    from common.paths import db_url
    from labeling_app.runtime import check_database_may_be_created

    url = db_url()
    created = check_database_may_be_created(url, create=create)
    engine = db.connect(url)
    try:
        accounts = db.accounts_enabled(engine)
    finally:
        engine.dispose()
    if created is not None:
        print(f"created a new, empty database at {created}", file=sys.stderr)
    return accounts


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m labeling_app",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config section `label` (set in the profile):\n" + describe(LabelConfig),
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", 8501)), help="port (default: $PORT or 8501)"
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve a team: needs accounts, "
        "`python -m db users add NAME --role admin`)",
    )
    parser.add_argument(
        "--insecure-open",
        action="store_true",
        help="serve another address without accounts anyway: shared-token mode (one trusted room) with "
        "RLHF_LABEL_TOKEN, else an open app",
    )
    parser.add_argument("--config", type=Path, default=None, help="profile file (default: $RLHF_CONFIG)")
    parser.add_argument(
        "--create-db",
        action="store_true",
        help="create the SQLite database named by RLHF_DB_URL if it does not exist (without this flag only "
        "the default data/feedback.sqlite is created; otherwise run `python -m db upgrade` first)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port number.", "use 1-65535, e.g. --port 8501.")
    if args.config is not None:
        os.environ["RLHF_CONFIG"] = str(args.config)
    accounts = open_database(create=args.create_db)
    cfg = load_config(LabelConfig, "label")
    if cfg.identity_provider:  # st.login's prerequisites, before a labeller meets their absence
        runtime.check_identity_provider(cfg.identity_provider)
    mode = runtime.sign_in_mode(accounts, runtime.required_token())
    warning = runtime.check_serving(args.address, mode, insecure_open=args.insecure_open)
    if warning:
        print(warning, file=sys.stderr)
    cmd = streamlit_args(args.port, args.address)
    print(f"labelling app on http://{args.address}:{args.port}, {runtime.MODE_NAMES[mode]}", file=sys.stderr)
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    main()
