"""`python -m herald.demo` (`make demo`)."""

from herald.demo import app

app()
