"""Input checks that run before the agent starts (index, CF model, LLM: ~20 s and more): the
data set is read once (~0.3 s) so unknown ids and bad filters fail at once, with a hint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, RecAgentError, UnknownIdError

__all__ = [
    "load_data",
    "check_user",
    "check_users",
    "parse_filters",
    "check_filters",
    "recommend_request",
    "chat_turns",
    "ray_config",
]

FILTER_HINT = 'e.g. --filters \'{"exclude": {"genres": ["Horror"]}, "ranges": {"year": [1990, 1999]}}\''
_FLAGS = {"user_id": "--user", "query": "--query", "filters": "--filters", "k": "--k", "message": "--message"}


def load_data(data: str):
    """The data set, for the id checks; the command hands it on to the agent (loaded once)."""
    from ..data import load_dataset

    return load_dataset(data)


def _examples(ds: Any) -> str:
    users = ds.interactions.users
    return ", ".join(users[:3]) + (f" … ({len(users)} users)" if len(users) > 3 else "")


def check_user(ds: Any, user: str | None, *, flag: str = "--user", new_ok: bool = False, alt: str = "") -> str | None:
    """An empty id is an error; an unknown one too, unless ``new_ok`` (a new user with --query).
    ``alt`` ends the hint with another way (e.g. "or --query TEXT for a new user")."""
    if user is None:
        return None
    if not user.strip():
        raise ConfigError(
            f"{flag} is empty", hint=f"pass a user id from the data, e.g. {flag} {ds.interactions.users[0]}"
        )
    user = user.strip()
    if user not in ds.interactions and not new_ok:
        raise UnknownIdError("user", [user], hint=f"pass a user id from {ds.name} ({_examples(ds)}){alt}")
    return user


def check_users(ds: Any, users: Sequence[str], *, flag: str) -> list[str]:
    ids = [u.strip() for u in users if u.strip()]
    if not ids:
        raise ConfigError(f"{flag} names no user", hint=f"pass comma-separated ids, e.g. {flag} 1,414")
    missing = [u for u in ids if u not in ds.interactions]
    if missing:
        raise UnknownIdError("user", missing, hint=f"pass user ids from {ds.name} ({_examples(ds)})")
    return ids


def parse_filters(filters: str | None) -> dict | None:
    """``--filters`` JSON → a dict (shape checked by :func:`check_filters`)."""
    if not filters:
        return None
    try:
        f = json.loads(filters)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--filters is not valid JSON ({e.msg} at character {e.pos})", hint=FILTER_HINT) from None
    if not isinstance(f, dict):
        raise ConfigError("--filters must be a JSON object", hint=FILTER_HINT)
    return f


def check_filters(ds: Any, filters: dict | None) -> None:
    """The filter against the catalog's attributes: unknown attributes and bad ranges fail now."""
    if not filters:
        return
    from ..store import ItemFilter, attribute_schema

    try:
        f = ItemFilter.parse(filters)
        if f is not None:
            f.validate(attribute_schema(ds.catalog))
    except RecAgentError as e:
        raise ConfigError(f"--filters: {e.message}", hint=e.hint or FILTER_HINT) from None
    except (TypeError, ValueError) as e:  # a shape the parser did not expect
        raise ConfigError(f"--filters is malformed ({e})", hint=FILTER_HINT) from None


def recommend_request(**fields: Any):
    """A :class:`RecommendRequest`, its validation errors named by flag (e.g. a 50 KB --query)."""
    from pydantic import ValidationError

    from ..agent import RecommendRequest
    from .options import pydantic_error

    try:
        return RecommendRequest(**fields)
    except ValidationError as e:
        raise pydantic_error(e, _FLAGS) from None


def chat_turns(message: str | None) -> list[str]:
    """``--message`` lines (one turn each), each checked like a /chat message."""
    from pydantic import ValidationError

    from ..chat import ChatTurn

    lines = [m for m in (message or "").splitlines() if m.strip()]
    for n, line in enumerate(lines, start=1):
        try:
            ChatTurn(message=line)
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"--message line {n}: {err['msg']}", hint="write one short request per line") from None
    return lines


def ray_config(address: str | None, workers: int, cpus: int | None, llm_urls: Sequence[str]) -> Any:
    """The RayConfig of ``--ray`` (None without it); Ray options without ``--ray`` are an error."""
    if address is None:
        if workers != 1 or cpus is not None:
            raise ConfigError(
                "--ray-workers and --ray-cpus need --ray", hint="add --ray (a local Ray) or --ray HOST:6379"
            )
        return None
    from pydantic import ValidationError

    from ..distributed import RayConfig

    if not address.strip():
        raise ConfigError("--ray is empty", hint="pass --ray alone for a local Ray, or --ray HOST:6379")
    try:
        return RayConfig(address=address.strip(), workers=workers, num_cpus=cpus, llm_urls=list(llm_urls))
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"invalid Ray option {err['loc'][0]}: {err['msg']}", hint="see --help") from None
