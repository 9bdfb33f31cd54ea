"""Which failures use a retry: a work's own (error, timeout, reported) unless its
``config["retry_on"]`` leaves them out; lost and interrupted always; too-large and
unrunnable never (issue 18 §2)."""

from __future__ import annotations

import pytest

from workflow.core.retry import RETRY_ON_REASONS, retries_after


@pytest.mark.parametrize("reason", ["error", "timeout", "reported", "lost", "interrupted"])
def test_by_default_every_failure_but_the_hopeless_ones_retries(reason):
    assert retries_after(reason, None)
    assert retries_after(reason, {"parent": "x"})


@pytest.mark.parametrize("reason", ["too-large", "unrunnable"])
def test_the_hopeless_failures_never_retry_whatever_the_work_says(reason):
    assert not retries_after(reason, None)
    assert not retries_after(reason, {"retry_on": list(RETRY_ON_REASONS)})


def test_retry_on_narrows_the_works_own_failures():
    config = {"retry_on": ["error"]}
    assert retries_after("error", config)
    assert not retries_after("timeout", config)
    assert not retries_after("reported", config)
    assert not any(retries_after(reason, {"retry_on": []}) for reason in RETRY_ON_REASONS)


@pytest.mark.parametrize("reason", ["lost", "interrupted"])
def test_lost_and_interrupted_attempts_retry_whatever_retry_on_says(reason):
    assert retries_after(reason, {"retry_on": []})


def test_a_retry_on_written_around_the_checks_reads_as_absent():
    """Reading never fails on what the log holds: a malformed value is the default."""
    for bad in ("error", ["oops"], 3, None):
        assert retries_after("timeout", {"retry_on": bad})
