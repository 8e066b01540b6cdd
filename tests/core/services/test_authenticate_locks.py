"""Authenticating never waits for a row lock on the token (PostgreSQL).

``last_used_at`` is noted at most once a minute, best effort: while another
transaction holds the token's row (a concurrent request noting the same use, a
revocation in progress) the write is skipped, not waited for. Before, that UPDATE
waited for the lock: a request stuck behind another one's transaction, held its
own connection meanwhile (one waited 4 minutes under load).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from core.models import ApiToken
from core.services import authenticate, create_token
from tests.builders import T0, make_team


def test_a_locked_token_row_is_skipped_not_waited_for(
    postgres_committed: sessionmaker[Session],
) -> None:
    with session_scope(postgres_committed) as session:
        team = make_team(session)
        issued = create_token(session, team=team, name="busy")
        token_id, secret = issued.token.id, issued.secret

    with postgres_committed() as holder, postgres_committed() as session:
        holder.execute(select(ApiToken).where(ApiToken.id == token_id).with_for_update())
        # were the write to wait for the holder's lock, it would fail after 2 s here
        session.execute(text("SET LOCAL lock_timeout = '2s'"))
        found = authenticate(session, token=secret, now=T0 + timedelta(hours=1))
        session.commit()
        holder.rollback()

    assert found.id == team.id
    with postgres_committed() as session:
        token = session.get(ApiToken, token_id)
        assert token is not None
        assert token.last_used_at is None  # skipped: it is noted at a later use
