"""Secrets are masked in texts that reach a log or a team."""

from __future__ import annotations

from core.redact import redact


class TestRedact:
    def test_a_password_in_a_url_is_masked(self) -> None:
        text = "could not reach redis://:s3cret@cache:6379/0 (timed out)"
        assert redact(text) == "could not reach redis://:***@cache:6379/0 (timed out)"

    def test_a_token_is_masked(self) -> None:
        token = "clr_" + "A" * 43
        assert redact(f"bad request with {token}") == "bad request with clr_***"

    def test_a_known_urls_password_is_masked_where_it_appears_alone(self) -> None:
        url = "postgresql+psycopg://app:hunter2@db/clr"
        assert redact("auth failed: hunter2 rejected", url) == "auth failed: *** rejected"

    def test_text_without_secrets_is_unchanged(self) -> None:
        text = "RuntimeError: CUDA out of memory (postgresql://db/clr)"
        assert redact(text, "not a url") == text
