"""After a search: finding its runs, promoting the best trial, the one test evaluation, the
compare of seeded searches and the report."""
