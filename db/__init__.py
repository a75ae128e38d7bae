"""The feedback database: the only code in the project that writes SQL.

``engine = db.connect()`` opens (and migrates) the database named by ``RLHF_DB_URL``; every other
function takes that engine first. See ``docs/architecture.md`` and ``docs/database.md``.
"""

from db.engine import DatabaseError, connect, current_revision, head_revision, migrate
from db.models import COMMENT_MAX, FLAGS, Base, Completion, Judgement, Labeler, Lease, ModelVersion, Prompt
from db.queue import extend_lease, get_item, hold_item, next_item, queue_size
from db.reads import (
    get_model_version,
    judgement_rows,
    judgements_frame,
    labelled_dataset,
    latest_model_version,
    list_model_versions,
    session_judgement_count,
    stats,
    unlabelled_completions,
)
from db.transfer import export_labels, import_prompts
from db.types import Item, LabelledExample, ModelVersionInfo, NewCompletion, shown_text
from db.writes import (
    DatabaseGone,
    LeaseLost,
    add_completions,
    add_prompts,
    check_database_file,
    check_note,
    database_file_id,
    get_or_create_labeler,
    labeler_name_key,
    missing_database_file,
    record_judgement,
    register_model_version,
    release_leases,
    set_reward_scores,
    undo_last,
    validate_labeler_name,
)

__all__ = [
    "COMMENT_MAX",
    "Base",
    "Completion",
    "DatabaseError",
    "DatabaseGone",
    "FLAGS",
    "Item",
    "Judgement",
    "LabelledExample",
    "LeaseLost",
    "Labeler",
    "Lease",
    "ModelVersion",
    "ModelVersionInfo",
    "NewCompletion",
    "Prompt",
    "add_completions",
    "add_prompts",
    "check_database_file",
    "check_note",
    "connect",
    "current_revision",
    "database_file_id",
    "export_labels",
    "extend_lease",
    "get_item",
    "get_model_version",
    "get_or_create_labeler",
    "head_revision",
    "hold_item",
    "import_prompts",
    "judgement_rows",
    "judgements_frame",
    "labeler_name_key",
    "labelled_dataset",
    "latest_model_version",
    "list_model_versions",
    "migrate",
    "missing_database_file",
    "next_item",
    "queue_size",
    "record_judgement",
    "register_model_version",
    "release_leases",
    "session_judgement_count",
    "set_reward_scores",
    "shown_text",
    "stats",
    "undo_last",
    "unlabelled_completions",
    "validate_labeler_name",
]
