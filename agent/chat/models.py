"""The chat agent's data: its config, a user turn, the structured query, the reply, the session."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..agent import RecommendedItem

__all__ = ["ChatConfig", "ChatTurn", "ChatQuery", "ChatReply", "ChatSession", "SessionStatus"]

SessionStatus = Literal["new", "continued", "unknown", "expired", "rebuilt"]
"""How the memory behind a reply came about: ``new`` conversation, ``continued`` from the store,
``unknown`` / ``expired`` id (memory lost, started fresh), ``rebuilt`` from resent messages."""


class ChatConfig(BaseModel):
    """Chat behaviour; defaults suit the bundled 135M model."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=1, le=50)
    """Picks per answer."""
    parse_with_llm: bool = True
    """Ask the LLM for the structured query (validated); False = rules only."""
    llm_parse_when: Literal["unsure", "always"] = "unsure"
    """Which messages the LLM parses: ``"unsure"`` = only those in which the rules found nothing
    (no title, genre or year), so a turn the rules understood streams its answer without
    waiting for a JSON generation; ``"always"`` = every message. Measured in
    bench/results/chat.md: where the rules found something, the merged parse was never better."""
    parse_max_tokens: int = Field(160, ge=32, le=1024)
    """Token budget of the JSON query. The schema bounds every field, but vLLM lets the model put
    whitespace between tokens, so a rambling answer can still be cut off: then rules only."""
    max_schema_values: int = Field(60, ge=2)
    """Attributes with more distinct values than this are not offered to the LLM (tags: too many)."""
    max_sessions: int = Field(1000, ge=1)
    """Conversations kept (least recently used dropped first)."""
    session_ttl_s: float = Field(6 * 3600, gt=0)
    """A conversation idle this long is forgotten; its id then answers ``session_status="expired"``."""
    session_store: str = "memory"
    """Where conversations live: ``"memory"`` (this process only) or an SQLite file
    (``"chat.db"``, ``"sqlite:///path/chat.db"``) that several processes can share."""
    relax_when_empty: bool = True
    """Nothing passes the filters: retry once without year range and required genres (excludes stay)."""


class ChatTurn(BaseModel):
    """One user message (also the body of ``POST /chat``)."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1, max_length=2000, description="What the user says.")
    session_id: str | None = Field(None, max_length=100, description="Conversation id; omitted = a new conversation.")
    user_id: str | None = Field(None, max_length=200, description="A known user id adds their stored history.")
    k: int | None = Field(None, ge=1, le=50, description="Picks to return.")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message is blank; write what you would like to watch")
        return v.strip()


class ChatQuery(BaseModel):
    """The structured query behind an answer, and how it was obtained."""

    liked: list[str] = Field(default_factory=list)
    """Catalog ids of the reference items the message names as liked."""
    liked_titles: list[str] = Field(default_factory=list)
    disliked: list[str] = Field(default_factory=list)
    unknown_titles: list[str] = Field(default_factory=list)
    """Titles the message names that are not in the catalog."""
    include: dict[str, list[str]] = Field(default_factory=dict)
    exclude: dict[str, list[str]] = Field(default_factory=dict)
    year_min: int | None = None
    year_max: int | None = None
    mood: str = ""
    more: bool = False
    """"more" / "something else": same query, new items."""
    reset: bool = False
    language: str = "en"
    parse_path: Literal["llm", "rules", "llm+rules"] = "rules"
    contributions: dict[str, list[str]] = Field(default_factory=dict)
    """Path → the fields it put into this query (``"liked:1214"``, ``"exclude:genres=Horror"``,
    ``"year_min"``, ``"mood"``); a field both paths found is listed under both."""
    notes: list[str] = Field(default_factory=list)
    ambiguous: dict[str, list[str]] = Field(default_factory=dict)
    """Chosen item id → other films of that name nearly as well known (the reply asks which)."""
    conflicts: list[str] = Field(default_factory=list)
    """Constraints the message states both ways ("a comedy but no comedy", "before 1950 and
    after 2000"), in words; the reply says which one it kept."""


class ChatReply(BaseModel):
    """The agent's answer: text for people, items and the query for programs."""

    session_id: str
    reply: str
    items: list[RecommendedItem] = Field(default_factory=list)
    query: ChatQuery
    session_status: SessionStatus = "new"
    """Whether the conversation's memory was found; a server sends it as a header."""
    relaxed: list[str] = Field(default_factory=list)
    """Constraints dropped because nothing passed them all."""
    memory: dict[str, list[str]] = Field(default_factory=dict)
    fallback: dict[str, str] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(default_factory=dict)


@dataclass
class ChatSession:
    """What one conversation remembers (stored as JSON of these fields)."""

    id: str
    user_id: str | None = None
    likes: list[str] = field(default_factory=list)
    dislikes: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    last_shown: list[str] = field(default_factory=list)  # the previous answer, for "the second one"
    include: dict[str, list[str]] = field(default_factory=dict)
    exclude: dict[str, list[str]] = field(default_factory=dict)
    year_min: int | None = None
    year_max: int | None = None
    mood: str = ""
    turns: int = 0
    updated: float = field(default_factory=time.time)
    status: SessionStatus | None = "new"
    """What the next reply reports about how this memory came about; cleared once reported."""

    def memory(self) -> dict[str, list[str]]:
        return {"likes": list(self.likes), "dislikes": list(self.dislikes), "shown": list(self.shown)}
