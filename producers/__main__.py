"""`python -m producers api|scheduler|send|users|schedules|api-clients`."""

from producers.cli import main

main()
