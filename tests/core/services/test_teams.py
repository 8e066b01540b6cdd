"""Teams, tokens and authentication: secrets are stored hashed, revoked ones refused."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, TeamNameTaken, TeamNotFound, TokenNotFound, Unauthorized
from core.models import ApiToken
from core.services import (
    authenticate,
    create_team,
    create_token,
    get_team,
    hash_token,
    list_tokens,
    revoke_token,
)
from tests.builders import T0, make_team


class TestTeams:
    def test_create_and_find_by_name(self, session: Session) -> None:
        team = create_team(session, name="  vision  ", now=T0)
        assert (team.name, team.created_at) == ("vision", T0)
        assert get_team(session, name="vision").id == team.id

    def test_names_are_unique(self, session: Session) -> None:
        create_team(session, name="vision")
        with pytest.raises(TeamNameTaken, match="a team named 'vision' already exists"):
            create_team(session, name="vision")

    @pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\there"])
    def test_bad_names_are_refused(self, session: Session, name: str) -> None:
        with pytest.raises(InvalidInput) as info:
            create_team(session, name=name)
        assert info.value.errors[0]["field"] == "name"

    def test_unknown_team(self, session: Session) -> None:
        with pytest.raises(TeamNotFound):
            get_team(session, name="nobody")


class TestTokens:
    def test_the_secret_is_returned_once_and_only_its_hash_is_stored(
        self, session: Session
    ) -> None:
        team = make_team(session)
        issued = create_token(session, team=team, name="ci", now=T0)
        assert issued.secret.startswith("clr_")
        assert len(issued.secret) == 4 + 43
        session.expire_all()
        row = session.execute(
            select(ApiToken.__table__).where(ApiToken.id == issued.token.id)
        ).one()
        assert row.token_hash == hashlib.sha256(issued.secret.encode()).hexdigest()
        assert row.prefix == issued.secret[:8]
        assert all(issued.secret not in str(value) for value in row)

    def test_two_tokens_never_share_a_secret(self, session: Session) -> None:
        team = make_team(session)
        secrets = {create_token(session, team=team, name=f"t{i}").secret for i in range(5)}
        assert len(secrets) == 5
        assert [t.name for t in list_tokens(session, team=team)] == [f"t{i}" for i in range(5)]

    def test_authenticate_returns_the_team_and_notes_the_use(self, session: Session) -> None:
        team = make_team(session)
        issued = create_token(session, team=team, name="ci")
        assert authenticate(session, token=issued.secret, now=T0).id == team.id
        session.refresh(issued.token)
        assert issued.token.last_used_at == T0

    def test_last_use_is_written_at_most_once_a_minute(self, session: Session) -> None:
        issued = create_token(session, team=make_team(session), name="ci")
        for seconds in (0, 30, 59):
            authenticate(session, token=issued.secret, now=T0 + timedelta(seconds=seconds))
        session.refresh(issued.token)
        assert issued.token.last_used_at == T0
        authenticate(session, token=issued.secret, now=T0 + timedelta(seconds=61))
        session.refresh(issued.token)
        assert issued.token.last_used_at == T0 + timedelta(seconds=61)

    def test_a_revoked_token_is_refused(self, session: Session) -> None:
        team = make_team(session)
        issued = create_token(session, team=team, name="ci")
        revoke_token(session, team=team, token_id=issued.token.id, now=T0)
        with pytest.raises(Unauthorized, match="was revoked") as info:
            authenticate(session, token=issued.secret)
        assert info.value.status == 401

    def test_revoking_twice_keeps_the_first_time(self, session: Session) -> None:
        team = make_team(session)
        issued = create_token(session, team=team, name="ci")
        revoke_token(session, team=team, token_id=issued.token.id, now=T0)
        again = revoke_token(session, team=team, token_id=issued.token.id, now=T0 + timedelta(1))
        assert again.revoked_at == T0
        assert again.revoked

    def test_another_teams_token_cannot_be_revoked(self, session: Session) -> None:
        issued = create_token(session, team=make_team(session), name="ci")
        with pytest.raises(TokenNotFound):
            revoke_token(session, team=make_team(session), token_id=issued.token.id)
        session.refresh(issued.token)
        assert issued.token.revoked_at is None
        with pytest.raises(TokenNotFound):
            revoke_token(session, team=make_team(session), token_id=uuid.uuid4())

    @pytest.mark.parametrize(
        ("token", "message"),
        [
            ("clr_" + "A" * 43, "unknown token"),
            # the wrong shape is refused without a lookup
            ("clr_" + "A" * 42, "malformed token"),
            ("clr_" + "A" * 42 + "!", "malformed token"),
            ("Bearer abc", "not a clr-sweep token"),
            ("", "not a clr-sweep token"),
        ],
    )
    def test_unknown_and_malformed_tokens_are_refused(
        self, session: Session, token: str, message: str
    ) -> None:
        create_token(session, team=make_team(session), name="ci")
        with pytest.raises(Unauthorized, match=message):
            authenticate(session, token=token)

    def test_hash_token_is_sha256_hex(self) -> None:
        assert hash_token("clr_x") == hashlib.sha256(b"clr_x").hexdigest()
