"""What every gateway process agrees on: runtime namespaces, where the planner puts them, signals.

* :mod:`prism.control.planner` -- a pure function from a namespace's declared needs and
  the stores' capabilities, capacities and current load to a store, or to the reasons
  every store was refused;
* :mod:`prism.control.catalog` -- the runtime namespaces, kept as one document in the
  control store, changed only by conditional writes and followed by every process;
* :mod:`prism.control.signals` -- what a namespace's clients are told to set their
  deadlines, hedging, retries and compression to;
* :mod:`prism.control.protospec` -- a namespace body from a protobuf message's options.
"""

from __future__ import annotations

from prism.control.catalog import CatalogEntry, CatalogState, NamespaceCatalog
from prism.control.planner import Fail, Plan, StoreFails, StoreOffer, check_needs, plan

__all__ = [
    "CatalogEntry",
    "CatalogState",
    "Fail",
    "NamespaceCatalog",
    "Plan",
    "StoreFails",
    "StoreOffer",
    "check_needs",
    "plan",
]
