from herald.bench.cli import app

app()
