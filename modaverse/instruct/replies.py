"""A chat reply turned into a training record, or rejected with the reason.

A reply is kept only if it is one JSON object ``{"instruction", "response"}`` whose response
is a valid meta-response, whose content fits the task's kind (an output-side reply calls
the task's generator; the others answer in text), and which, paired with the task's media,
is a valid training record. ``modaverse data validate`` therefore accepts every kept line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modaverse.data.records import Record, RecordError, parse_record, user
from modaverse.instruct.sources import kind_problem
from modaverse.instruct.tasks import Task
from modaverse.meta import schema as meta


class Rejected(Exception):
    """A reply that does not become a record; ``str()`` is the reason."""


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instruction: str = Field(min_length=1, max_length=meta.MAX_TEXT_CHARS)
    response: meta.MetaResponse


def _strict_subset(node: dict, defs: dict) -> dict:
    """A node of the meta-response schema in the subset strict structured outputs accept:
    references inlined, only required properties, and no optional keywords (bounds, lengths)."""
    node = defs[node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node
    out = {k: node[k] for k in ("type", "enum") if k in node}
    if node.get("type") == "object":
        required = list(node.get("required", []))
        out |= {"properties": {k: _strict_subset(node["properties"][k], defs) for k in required},
                "required": required, "additionalProperties": False}
    elif node.get("type") == "array":
        out["items"] = _strict_subset(node["items"], defs)
    return out


def reply_schema(caps: Sequence[str]) -> dict:
    """The ``response_format`` JSON schema: an instruction, and a response derived from the meta-response schema.

    Strict mode needs every property required and no optional keywords, so render
    parameters and length limits are left out here and enforced by :class:`Reply` instead.
    """
    response = meta.json_schema(caps)
    text = {"type": "string"}
    return {"type": "object", "properties": {"instruction": text, "response": _strict_subset(response, response["$defs"])},
            "required": ["instruction", "response"], "additionalProperties": False}


def _json_object(content: str) -> object:
    """The JSON object in a reply; without structured outputs, models wrap it in fences or prose."""
    body = meta.unfence(content)
    if not body.startswith("{") and "{" in body and "}" in body[body.index("{"):]:
        body = body[body.index("{"): body.rindex("}") + 1]
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise Rejected(f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _relative(media: str, out_dir: Path) -> str:
    try:
        return os.path.relpath(media, out_dir)
    except ValueError:  # another drive (Windows): keep it absolute
        return media


def to_record(task: Task, content: str | None, record_id: str, source: str, out_dir: Path,
              caps: Sequence[str]) -> Record:
    """The record for a task's reply; raises :class:`Rejected` with the reason."""
    if content is None or not content.strip():
        raise Rejected("empty reply")
    try:
        reply = Reply.model_validate(_json_object(content), context={"capabilities": tuple(caps)})
    except ValidationError as e:
        raise Rejected(meta.reason(e)) from None
    problem = kind_problem(task.kind, reply.response, task.target, len(task.inputs), noun="reply")
    if problem:
        raise Rejected(problem)
    media = [(_relative(c.media, out_dir), c.modality) for c in task.inputs]
    doc = {"id": record_id, "source": source,
           "messages": [user(reply.instruction, *media),
                        {"role": "assistant", "meta_response": reply.response.as_dict()}]}
    try:
        return parse_record(doc, caps)
    except RecordError as e:
        raise Rejected(str(e)) from None


def not_a_completion(reply) -> str | None:
    """Why a 200 reply is not a chat completion, or None. The client hands back a bare string for a
    non-JSON body (a proxy's HTML page) and an unvalidated object for JSON of another shape."""
    from openai.types.chat import ChatCompletion
    from pydantic import ValidationError

    if isinstance(reply, ChatCompletion):
        try:
            ChatCompletion.model_validate(reply.model_dump(warnings=False))
            return None
        except ValidationError as e:
            return f"not a chat completion: a JSON reply of another shape ({e.errors()[0]['loc'][0]!r} invalid)"
    text = reply if isinstance(reply, str) else repr(reply)
    return f"not a chat completion: the server answered 200 with {' '.join(text.split())[:120]!r}"
