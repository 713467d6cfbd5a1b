"""The cutter's pending summary kept on ``dataset_state`` (issue #16, fourth session).

The cutter asks, each time it wakes, how many changes of each dataset wait for a version and since when. It was
a count over the change log after each dataset's cut position: O(changes waiting) per wake-up, and a cutter that
fell behind woke often over thousands of them (`python -m benchmarks.profile_services --dataset parks_gardens
--spread --events 20000`: 33 µs of PostgreSQL per event, the largest statement of the run). Now the transaction
recording changes appends one ``pending_tally`` row per dataset (how many changes it added, when); the dataset's
next cut, which holds its cut lock exclusively, folds them into ``dataset_state.pending_changes`` and
``newest_received_at`` and takes off the changes of its range. The summary reads the state and the tallies since
the last cut (one row per recording transaction), and the oldest waiting change is the first after the cut
position (one index probe). A counter updated in place by every recorder was tried first: recorders of one
dataset then waited for each other's commit (tests/integration/test_version_ranges.py holds one open).

Existing stores: the changes after each dataset's cut position become one tally row per dataset.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE pending_tally (id bigserial PRIMARY KEY, dataset text NOT NULL, changes bigint NOT NULL, "
        "newest_received_at timestamptz NOT NULL)"
    )
    op.execute("CREATE INDEX pending_tally_dataset ON pending_tally (dataset)")
    op.execute(
        "ALTER TABLE dataset_state ADD COLUMN pending_changes bigint NOT NULL DEFAULT 0, "
        "ADD COLUMN newest_received_at timestamptz"
    )
    # what waits now, as one tally per dataset (a dataset never cut has no dataset_state row, and gets none here:
    # a state row would list it at version 0 before its first version)
    op.execute(
        "INSERT INTO pending_tally (dataset, changes, newest_received_at) "
        "SELECT e.dataset, count(*), max(e.received_at) FROM change_log_entry e "
        "LEFT JOIN dataset_state s ON s.dataset = e.dataset "
        "WHERE e.position > coalesce(s.cut_position, 0) GROUP BY e.dataset"
    )


def downgrade() -> None:
    op.execute("DROP TABLE pending_tally")
    op.execute("ALTER TABLE dataset_state DROP COLUMN pending_changes, DROP COLUMN newest_received_at")
