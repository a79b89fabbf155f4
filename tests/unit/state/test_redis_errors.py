"""Every redis-py error the stores can meet has one translation: a link that is down (a server,
a Sentinel, or a master being replaced) is retried, wrong credentials are terminal and name the
field to fix."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import ReadOnlyError
from redis.sentinel import MasterNotFoundError

from cdc.errors import CdcError, CheckpointUnavailable
from cdc.state.redis import translate

# What redis-py 8 says when it asked every Sentinel and none named the master: each Sentinel's
# client repr (cut short here), then that Sentinel's error.
SENTINEL = "<redis.client.Redis(<redis.connection.ConnectionPool(<...(host=s1,port=26379)>)>)>"
REFUSED = f"No master found for 'cdc' : {SENTINEL} - network:ConnectionError"
ONE_DENIED = (
    f"No master found for 'cdc' : {SENTINEL} - network:ConnectionError, "
    f"{SENTINEL} - network:AuthenticationError"
)


@pytest.mark.parametrize(
    ("error", "sentinel", "kind", "message", "hint"),
    [
        (
            redis.ConnectionError("Error 111 connecting"),
            False,
            CheckpointUnavailable,
            "x: Error 111 connecting",
            None,
        ),
        (
            redis.TimeoutError("Timeout reading"),
            False,
            CheckpointUnavailable,
            "x: Timeout reading",
            None,
        ),
        (
            ReadOnlyError("READONLY You can't write"),
            False,
            CheckpointUnavailable,
            "x: READONLY",
            None,
        ),
        (
            redis.ResponseError("NOREPLICAS Not enough"),
            True,
            CheckpointUnavailable,
            "x: NOREPLICAS",
            None,
        ),
        (
            redis.AuthenticationError("invalid username-password pair"),
            False,
            CdcError,
            "x: invalid username-password pair",
            "check the user and password in checkpoint.redis.url",
        ),
        (
            redis.AuthenticationError("invalid username-password pair"),
            True,
            CdcError,
            "x: invalid username-password pair",
            "check the user and password in checkpoint.redis.url (the master's)",
        ),
        (
            redis.ResponseError("NOAUTH Authentication required."),
            False,
            CdcError,
            "x: NOAUTH",
            "put the password in checkpoint.redis.url",
        ),
        (
            MasterNotFoundError("No master found for 'cdc'"),
            True,
            CheckpointUnavailable,
            "x: no master found: the Sentinels know no master of that name that is up",
            "check checkpoint.redis.sentinels and master, and that the Sentinels are up and "
            "monitor the master under that name",
        ),
        (
            MasterNotFoundError(REFUSED),
            True,
            CheckpointUnavailable,
            "x: no master found: 1 Sentinel(s) could not be asked (ConnectionError)",
            "check checkpoint.redis.sentinels and master, and that the Sentinels are up and "
            "monitor the master under that name",
        ),
        (
            MasterNotFoundError(ONE_DENIED),
            True,
            CdcError,
            "x: a Sentinel refused the connector's password",
            "check checkpoint.redis.sentinel_password (the Sentinels' requirepass)",
        ),
    ],
)
def test_each_redis_error_has_its_translation(
    error: redis.RedisError, sentinel: bool, kind: type[CdcError], message: str, hint: str | None
) -> None:
    translated = translate(error, "x", sentinel=sentinel)

    assert type(translated) is kind
    assert translated.message.startswith(message)
    assert translated.hint == hint
    assert translated.transient == (kind is CheckpointUnavailable)


def test_the_sentinels_client_reprs_stay_out_of_the_message() -> None:
    translated = translate(MasterNotFoundError(REFUSED), "x", sentinel=True)

    assert "redis.client" not in translated.message
