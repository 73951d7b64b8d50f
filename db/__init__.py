"""The results database: schema, engine setup, migrations, ingestion and queries.

Only this package imports SQLAlchemy; the rest of the project sees plain data.
"""
