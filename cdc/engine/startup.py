"""Where a run starts: the stored checkpoint, or the server's position now."""

from __future__ import annotations

import logging

from cdc.errors import PositionError
from cdc.model.checkpoint import Checkpoint
from cdc.model.position import Position, ServerInfo
from cdc.model.versions import initial_counter

log = logging.getLogger(__name__)


def start_from(
    stored: Checkpoint | None, info: ServerInfo, now: Position, where: str, address: str
) -> Checkpoint:
    """The checkpoint a run starts from: the stored one (`where` names the store), or, with
    none, the server's current position `now` with a counter from the clock (not written yet:
    its `written_at` is 0). A checkpoint of the other flavor is refused."""
    if stored is not None:
        if stored.position.flavor != info.flavor:
            raise PositionError(
                f"the checkpoint in {where} is for a {stored.position.flavor} server but "
                f"{address} is {info.flavor}",
                hint="point source at the right server, or run `cdc position reset`",
            )
        log.info("resuming from checkpoint: %s", stored.position.describe())
        return stored
    log.info(
        "no checkpoint in %s: starting at the server's current position (%s); rows written "
        "before it are not copied",
        where,
        now.describe(),
    )
    return Checkpoint(position=now, counter=initial_counter(), server=info.identity)
