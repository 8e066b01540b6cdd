"""Where the client finds the service and its token: arguments, environment, config file.

Each setting is taken from the first of:

1. the argument (``Client(url=..., token=...)``, the CLI's ``--url`` / ``--token``);
2. the environment: ``CLR_URL`` and ``CLR_TOKEN``;
3. the config file written by ``clr-sweep login URL`` (:func:`login`):
   ``config.toml`` in the platform's user config folder (``~/.config/clr-sweep`` on
   Linux), or the file ``CLR_CONFIG`` names;
4. the default URL, :data:`DEFAULT_URL` (no default token).

The file's token is sent only to the file's URL.

The file holds two keys and is private to its owner (mode 0600)::

    url = "https://clr.example.org"
    token = "clr_..."
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from clr_sweep.errors import ClientError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_URL",
    "TOKEN_ENV",
    "URL_ENV",
    "Config",
    "ConfigError",
    "config_path",
    "load_config",
    "login",
    "logout",
    "resolve",
]

DEFAULT_URL = "http://127.0.0.1:8000"
"""Where ``clr-sweep serve`` and ``clr-sweep api`` listen by default."""

URL_ENV = "CLR_URL"
TOKEN_ENV = "CLR_TOKEN"
CONFIG_ENV = "CLR_CONFIG"
"""Names another config file than the platform's (tests, several services)."""

_KEYS = ("url", "token")


class ConfigError(ClientError):
    """The config file cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class Config:
    """What the config file holds (None: not set there)."""

    url: str | None = None
    token: str | None = None


def config_path() -> Path:
    """The config file: ``CLR_CONFIG``, else ``<user config dir>/clr-sweep/config.toml``."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("clr-sweep")) / "config.toml"


def load_config(path: Path | None = None) -> Config:
    """The config file's settings; an absent file sets nothing.

    Raises:
        ConfigError: the file is not TOML, or a key is not a string.
    """
    path = config_path() if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    values: dict[str, str | None] = {}
    for key in _KEYS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"the config file {path}: {key} must be a string")
        values[key] = value or None
    return Config(**values)


def _toml_string(value: str) -> str:
    # a JSON string of ASCII is a TOML basic string: the same quotes and escapes
    return json.dumps(value, ensure_ascii=True)


def login(url: str, token: str, *, path: Path | None = None) -> Path:
    """Write ``url`` and ``token`` to the config file (mode 0600, replaced atomically).

    The folder is created private (0700) when missing. A reader sees the old file
    or the new one, never a part; the token is never in a file others may read,
    not even for a moment.

    Returns:
        The file written.

    Raises:
        ConfigError: ``url`` or ``token`` is empty, or the file cannot be written.
    """
    url, token = url.strip(), token.strip()
    for name, value in (("url", url), ("token", token)):
        if not value:
            raise ConfigError(f"{name} must not be empty")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(f"{name} must not contain control characters")
    path = config_path() if path is None else path
    text = f"url = {_toml_string(url.rstrip('/'))}\ntoken = {_toml_string(token)}\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=path.parent)
        try:
            # mkstemp creates the file 0600 already; be explicit about it
            os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write the config file {path}: {exc.strerror}") from exc
    return path


def logout(*, path: Path | None = None) -> bool:
    """Remove the config file; whether there was one."""
    path = config_path() if path is None else path
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """The URL and token to use: the argument, the environment, the config file, the default.

    The config file is read only when the argument and the environment leave one unset.
    Its token goes only to its own URL: a client pointed elsewhere (``url=``,
    ``CLR_URL``) never sends it to that other server.
    """
    url = url or os.environ.get(URL_ENV) or None
    token = token or os.environ.get(TOKEN_ENV) or None
    if url is None or token is None:
        config = load_config()
        url = url or config.url
        if token is None and config.token is not None and config.url is not None:
            if _same_url(url or DEFAULT_URL, config.url):
                token = config.token
    url = (url or DEFAULT_URL).strip().rstrip("/")
    if not url.lower().startswith(("http://", "https://")):
        example = "" if ":/" in url else f" (e.g. http://{url[:200]})"
        raise ConfigError(
            f"the service URL must start with http:// or https://, got {url[:200]!r}{example}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as exc:
        raise ConfigError(f"the service URL {url[:200]!r} is not a URL: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"the service URL {url[:200]!r} names no host")
    return url, token


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()
