from infra.cassandra import migration_files, split_statements


def test_migrations_are_shipped_in_order_and_start_with_the_keyspace() -> None:
    files = migration_files()
    versions = [v for v, _ in files]
    assert versions == sorted(versions)
    first = split_statements(files[0][1])[0]
    assert first.startswith("CREATE KEYSPACE IF NOT EXISTS herald")


def test_every_statement_is_idempotent() -> None:
    for version, text in migration_files():
        for stmt in split_statements(text):
            head = stmt.split("(")[0].upper()
            assert "IF NOT EXISTS" in head or "IF EXISTS" in head, (version, stmt[:80])


def test_split_drops_comments_even_with_semicolons() -> None:
    cql = (
        "-- header; with a semicolon\n"
        "CREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY); -- trailing\n\n"
        "CREATE TABLE IF NOT EXISTS b (\n  y int PRIMARY KEY -- null = none; really\n);\n"
    )
    stmts = split_statements(cql)
    assert len(stmts) == 2
    assert all("--" not in s for s in stmts)
    assert stmts[1].endswith(")")
