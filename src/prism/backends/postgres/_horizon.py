"""The change feed's delivery horizon: the number below which no change can still commit.

The feed's trigger numbers changes with a sequence at commit, without a lock, so a
transaction may take number 5, then another take 6 and commit first. A reader that
delivered 6 and moved its cursor there would never deliver 5: the horizon is how far
a reader may go without that gap.

A reader reads the sequence's last number N, then takes a transaction id U in a
statement of its own (it commits at once), then a snapshot. Any transaction holding
a number <= N that has not committed took its number before N was read, so it had
its transaction id before U was given: its id is below U. Once no transaction with
an id below U is in progress in a snapshot (committed ones are visible to every
later snapshot, rolled back ones log nothing), no change numbered <= N can appear
any more: N is below the horizon. (The snapshot's own ``xip`` list alone would not
do: it names only ids below the snapshot's ``xmax``, the newest *completed* id plus
one, so a transaction given its id later is in progress without being listed.)
``advance`` keeps such candidates, confirms them against each new snapshot, and
answers the highest confirmed number. A transaction that stays open (anywhere on
the server) delays the horizon, never moves it past a change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FeedHorizon", "parse_snapshot"]

#: Candidates kept waiting for their transactions; the oldest go first (they only delay delivery).
MAX_CANDIDATES = 256


def parse_snapshot(text: str) -> tuple[int, int, frozenset[int]]:
    """``xmin:xmax:xip,...`` (``pg_current_snapshot()::text``) as (xmin, xmax, in progress)."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x)


@dataclass
class FeedHorizon:
    """The highest change number a reader may deliver up to, from readings of the server."""

    safe: int = 0
    #: (number, the transaction id given just after it was read), oldest first.
    pending: list[tuple[int, int]] = field(default_factory=list)

    def advance(self, number: int, bound: int, snapshot: str) -> int:
        """The horizon, after reading ``number`` (the sequence), then ``bound`` (an id), then ``snapshot``."""
        _, xmax, running = parse_snapshot(snapshot)
        oldest_running = min(running, default=xmax)

        def settled(below: int) -> bool:
            # Every id below ``below`` completed: all were given before xmax, none still runs.
            return below <= xmax and oldest_running >= below

        safe = self.safe
        self.pending.append((number, bound))
        for candidate, below in self.pending:
            if candidate > safe and settled(below):
                safe = candidate
        self.safe = safe
        self.pending = [p for p in self.pending if p[0] > safe][-MAX_CANDIDATES:]
        return safe
