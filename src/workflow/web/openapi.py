"""The JSON API's OpenAPI schema (``/api/openapi.json``), written out: a handful of
endpoints, each a thin wrapper of a ``client.results`` question or a client action."""

from __future__ import annotations

from typing import Any

_Q = {"name": "q", "in": "query", "schema": {"type": "string"},
      "description": "The TUI's search: `status:failure user:ann tag:x pipeline:p site:s event:1 id:01J` "
                     "(`after:ID`: the works waiting on that work)"}
_ID = {"name": "work_id", "in": "path", "required": True, "schema": {"type": "string"}}
_JSON = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
         "400": {"description": "a bad search or parameter"}, "404": {"description": "no such work"}}
_ACTION = {
    "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
        "csrf": {"type": "string", "description": "the session's CSRF token (or the X-CSRF-Token header)"},
        "reason": {"type": "string"}, "priority": {"type": "integer"}}}}}},
    "responses": {**_JSON, "403": {"description": "not logged in, a viewer, or a bad CSRF token"},
                  "409": {"description": "the work's state refuses the action"}},
}


def _get(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": list(parameters), "responses": _JSON}}


SCHEMA: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "workflow web API", "version": "1",
             "description": "The results service and the work actions over HTTP; log in at /login "
                              "(a session cookie) when the UI has users."},
    "paths": {
        "/api/works": _get("Works matching a search, a page at a time", _Q,
                           {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                           {"name": "size", "in": "query", "schema": {"type": "integer", "enum": [25, 50, 100, 200]}},
                           {"name": "order", "in": "query", "schema": {"type": "string"}}),
        "/api/count": _get("How many works match a search", _Q),
        "/api/pipelines": _get("Per pipeline, the works in each status"),
        "/api/works/{work_id}": _get("One work, every field", _ID),
        "/api/works/{work_id}/history": _get("Every event of one work, in order", _ID),
        "/api/works/{work_id}/products": _get(
            "A work's archived products and plots (name, kind, size, sha256, storage, uri; href: its download)", _ID),
        "/api/works/{work_id}/cancel": {"post": {"summary": "Cancel a work", "parameters": [_ID], **_ACTION}},
        "/api/works/{work_id}/requeue": {"post": {"summary": "Re-queue (retry) a work", "parameters": [_ID],
                                                  **_ACTION}},
        "/api/works/{work_id}/priority": {"post": {"summary": "Change a queued work's priority", "parameters": [_ID],
                                                   **_ACTION}},
        "/api/bulk": {"post": {"summary": "Cancel every work a search finds (form: q, action=cancel, reason)",
                               **_ACTION}},
    },
}
