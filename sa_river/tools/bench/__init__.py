"""``python -m sa_river bench``: sa_river beside a raw-psycopg ceiling, measured in one run.

The modules, by what they are responsible for:

- :mod:`~sa_river.tools.bench.report`: the options, the result rows, the table and the JSON;
- :mod:`~sa_river.tools.bench.workloads`: what each workload does on each side (described
  there in full);
- :mod:`~sa_river.tools.bench.sql`: the raw-SQL ceilings and the bench's chores;
- :mod:`~sa_river.tools.bench.plan`: the ``EXPLAIN`` of the fetch statement and its index;
- :mod:`~sa_river.tools.bench.scratch`: the scratch databases every run creates and drops;
- :mod:`~sa_river.tools.bench.run`: one run from start to end, and how it picks its server.

Nothing is imported here: the command line builds its parser from :mod:`.report` alone, so
no other command pays for loading the workloads.
"""
