"""Every SQL statement the runtime runs, as SQLAlchemy Core, in one place (the benchmark's
raw-SQL ceiling, in ``sa_river.tools.bench.sql``, is the one exception: its point is to use no
library).

Internal: not part of the public API. The rules:

- functions are named ``<table>_<verb>`` and take a ``Connection`` (or build a statement);
- every value is a bound parameter; nothing from a caller is formatted into SQL text;
- database time (``now()``) decides states and due times, so client clocks never matter;
- other modules never build SQL: they call these functions.
"""
