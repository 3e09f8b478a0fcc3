"""``python -m prism.backends.postgres [TABLE]``: print the DDL of the table, for an operator to run."""

import sys

from prism.backends.postgres._sql import DEFAULT_TABLE, ddl

print(ddl(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TABLE), end="")
