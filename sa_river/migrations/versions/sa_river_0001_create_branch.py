"""Create the sa_river branch: an empty root revision carrying the ``sa_river`` label.

Revision ID: sa_river_0001
Revises:
Create Date: 2025-01-01

The label lets any environment address sa_river's lineage as ``sa_river@head``, even one that
also holds an application's revisions (Door 3 in :mod:`sa_river.migrate`).
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "sa_river_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sa_river",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
