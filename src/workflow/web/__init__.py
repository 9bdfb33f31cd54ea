"""The web UI: server-rendered pages with addresses, live by server-sent events, a JSON
API, and actions by role, over the same client and results service as the CLI and the TUI.

Run it with ``workflow web`` or ``workflow server --web-port N`` (:mod:`workflow.web.serve`).
"""
