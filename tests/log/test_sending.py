"""The notifier's settings and its retry rule (followers/sending.py), without a network."""

from __future__ import annotations

import pytest

from workflow.followers.sending import SendError, Settings, deliver, slack_token


def test_the_slack_token_comes_from_the_environment_else_from_a_credential_file(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKFLOW_SLACK_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WORKFLOW_SLACK_TOKEN_FILE", raising=False)
    assert slack_token() is None
    default = tmp_path / ".config" / "workflow" / "slack-token"
    default.parent.mkdir(parents=True)
    default.write_text("xoxb-from-home\n")
    assert slack_token() == "xoxb-from-home"
    named = tmp_path / "token"
    named.write_text("  xoxb-from-file  \nignored\n")
    monkeypatch.setenv("WORKFLOW_SLACK_TOKEN_FILE", str(named))
    assert slack_token() == "xoxb-from-file"
    monkeypatch.setenv("WORKFLOW_SLACK_TOKEN", "xoxb-env")
    assert slack_token() == "xoxb-env"


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORKFLOW_SLACK_API", "http://127.0.0.1:9/api/")
    monkeypatch.setenv("WORKFLOW_WEBHOOKS", "alerts=http://127.0.0.1:9/hook, pager=http://127.0.0.1:9/p")
    monkeypatch.setenv("WORKFLOW_NOTIFY_ON", "failure,cancelled")
    monkeypatch.setenv("WORKFLOW_NOTIFY_ATTEMPTS", "3")
    monkeypatch.setenv("WORKFLOW_NOTIFY_BACKOFF", "1.5")
    settings = Settings.from_env()
    assert settings.slack_api == "http://127.0.0.1:9/api"
    assert settings.webhooks == {"alerts": "http://127.0.0.1:9/hook", "pager": "http://127.0.0.1:9/p"}
    assert settings.on == ("failure", "cancelled") and settings.attempts == 3
    assert [settings.pause(n) for n in (1, 2, 3)] == [1.5, 3.0, 6.0] and Settings(backoff=100).pause(9) == 300
    monkeypatch.setenv("WORKFLOW_WEBHOOKS", "alerts=")
    with pytest.raises(ValueError, match="WORKFLOW_WEBHOOKS is key=url"):
        Settings.from_env()


async def test_deliver_retries_what_failed_only_waits_as_told_and_gives_up_on_a_permanent_error():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    answers = {"a": [SendError("HTTP 429", retry_after=7.0), {"ok": True}], "b": [{"ok": True}]}
    calls = {"a": 0, "b": 0}

    def target(name):
        async def send():
            calls[name] += 1
            answer = answers[name].pop(0)
            if isinstance(answer, SendError):
                raise answer
            return answer
        return name, send

    outcome = await deliver([target("a"), target("b")], Settings(attempts=4, backoff=1.0), sleep)
    assert outcome.ok and outcome.attempts == 2 and calls == {"a": 2, "b": 1} and waits == [7.0]
    assert outcome.reply == {"a": {"ok": True}, "b": {"ok": True}}

    async def refused():
        raise SendError("Slack refused the message: channel_not_found", permanent=True)

    outcome = await deliver([("slack:C1", refused)], Settings(attempts=4), sleep)
    assert not outcome.ok and outcome.attempts == 1 and "not tried again" in (outcome.error or "")
