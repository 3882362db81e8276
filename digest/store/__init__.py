"""The store: everything that persists or comes from outside — the database and its migrations,
one repository per table, CSV files, term files on disk, APScheduler's job table, news feeds."""
