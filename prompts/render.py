"""Render the prompt templates in this folder into chat messages and model prompts.

Each task has one Jinja2 file (``rank.jinja``, ``listwise.jinja``, ``explain.jinja``,
``parse_query.jinja``). A template defines up to three blocks, one per chat turn:

* ``{% block system %}`` — the system message (optional),
* ``{% block user %}`` — the user message (required),
* ``{% block assistant %}`` — text the answer starts with (optional prefill).

Only the blocks are rendered; put all logic inside them. Variables are strict: a misspelt
name raises instead of rendering as empty. Templates are data: copy one into your own folder,
edit it, and pass that folder as ``template_dir`` — files there override the shipped ones.

>>> r = PromptRenderer(tokenizer, template_dir="my_prompts")
>>> r.messages("rank", **context)        # [{"role": "system", ...}, {"role": "user", ...}]
>>> r.prompt("rank", **context)          # the model's chat template applied, ready for vLLM
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from ..errors import ConfigError

__all__ = ["PROMPTS_DIR", "PromptRenderer", "render_chat", "short_title"]

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parent
_BLOCKS = ("system", "user", "assistant")


def _fmt_rating(value: Any) -> str:
    """4.0 → '4', 3.5 → '3.5' (shorter prompts, same meaning)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(f)) if f.is_integer() else f"{f:g}"


_ALT_TITLE = re.compile(r"\s*\([^()]*\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(?P<t>.+), (?P<a>The|A|An|Les|Le|La|L'|Il|Die|Der|Das|El|Los|Las)$")


def short_title(title: Any) -> str:
    """A title in few tokens, as people write it: the year and alternate titles in brackets are
    dropped and a trailing article moves to the front ("City of Lost Children, The (Cité des
    enfants perdus, La) (1995)" → "The City of Lost Children"). A title that is all brackets is kept."""
    text = str(title).strip()
    while True:
        cut = _ALT_TITLE.sub("", text)
        if cut == text or not cut:
            break
        text = cut
    m = _TRAILING_ARTICLE.match(text)
    if m:
        a = m["a"]
        text = f"{a}{'' if a.endswith(chr(39)) else ' '}{m['t']}"
    return text


def _fmt_year2(value: Any) -> str:
    """1995 → "'95" (3 tokens instead of 6 for "(1995)"); "" when there is no year."""
    try:
        return f"'{int(value) % 100:02d}"
    except (TypeError, ValueError):
        return ""


class PromptRenderer:
    """Jinja2 templates → chat messages → the model's prompt string.

    ``tokenizer`` supplies the chat template (``apply_chat_template``); it may be ``None`` if
    only :meth:`messages` is used. ``template_dir`` is searched before the shipped templates.
    """

    def __init__(self, tokenizer: Any = None, template_dir: str | Path | None = None):
        loaders: list[jinja2.BaseLoader] = []
        if template_dir is not None:
            d = Path(template_dir).expanduser()
            if not d.is_dir():
                raise ConfigError(
                    f"prompt template folder not found: {d}",
                    hint="pass a folder holding .jinja files named like the shipped ones (rank.jinja, ...)",
                    param="template_dir",
                )
            loaders.append(jinja2.FileSystemLoader(str(d)))
        loaders.append(jinja2.FileSystemLoader(str(PROMPTS_DIR)))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            autoescape=False,  # plain-text prompts, not HTML
        )
        self.env.filters["rating"] = _fmt_rating
        self.env.filters["short"] = short_title
        self.env.filters["yy"] = _fmt_year2
        self.tokenizer = tokenizer
        self.template_dir = template_dir

    def template(self, name: str) -> jinja2.Template:
        fname = name if name.endswith(".jinja") else f"{name}.jinja"
        try:
            return self.env.get_template(fname)
        except jinja2.TemplateNotFound:
            raise ConfigError(
                f"prompt template {fname!r} not found in {self.template_dir or PROMPTS_DIR}",
                hint=f"shipped templates: {sorted(p.name for p in PROMPTS_DIR.glob('*.jinja'))}",
            ) from None
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError(f"prompt template {fname!r} line {e.lineno}: {e.message}") from e

    def messages(self, name: str, **context: Any) -> list[dict[str, str]]:
        """The chat messages of template ``name``; the ``assistant`` block, if any, comes last."""
        tmpl = self.template(name)
        if "user" not in tmpl.blocks:
            raise ConfigError(f"prompt template {name!r} has no {{% block user %}}", hint="see prompts/rank.jinja")
        out = []
        for role in _BLOCKS:
            if role not in tmpl.blocks:
                continue
            try:
                text = "".join(tmpl.blocks[role](tmpl.new_context(context))).strip()
            except jinja2.UndefinedError as e:
                raise ConfigError(
                    f"prompt template {name!r}: {e.message}", hint=f"variables passed: {sorted(context)}"
                ) from e
            if text or role == "user":
                out.append({"role": role, "content": text})
        return out

    def prompt(self, name: str, **context: Any) -> str:
        """Render ``name`` and apply the tokenizer's chat template (generation prompt included)."""
        return render_chat(self.tokenizer, self.messages(name, **context))


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """Apply the model's chat template; a trailing assistant message is a prefill of the answer."""
    msgs = [dict(m) for m in messages]
    prefill = msgs.pop()["content"] if msgs and msgs[-1]["role"] == "assistant" else ""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "no chat template: the tokenizer is missing or has none",
            hint="use an instruct/chat model (its tokenizer_config/chat_template.jinja defines it)",
        )
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return text + prefill
