from senders.cli import app

app(prog_name="python -m senders")
