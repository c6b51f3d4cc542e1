"""Storage: SQLAlchemy models, engine/session, Alembic migrations, queries.

``db`` knows tables and queries, not frameworks. The default database is the SQLite file
``ngbench.db`` in the working directory; ``NGBENCH_DB_URL`` or ``--db`` selects another
(a path, ``sqlite:///...`` or ``postgresql+psycopg://...``).
"""
