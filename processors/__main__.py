"""`python -m processors`: run one processor worker, configured by `HERALD_*` variables."""

from __future__ import annotations

import logging
import sys

from cassandra.cluster import NoHostAvailable, Session

from infra.cassandra import connect
from infra.kafka_producer import AsyncProducer
from infra.logging import configure_logging
from infra.retry import Backoff, retrying_blocking
from infra.settings import refuse_published_secrets
from processors.app import create_app
from processors.pipeline import Processor
from processors.settings import ProcessorSettings

log = logging.getLogger("processors")


def _connect(settings: ProcessorSettings) -> Session:
    # Fail closed at start too: without Cassandra there is no opt-out check, so wait.
    return retrying_blocking(
        lambda: connect(settings.cassandra),
        Backoff(0.5, settings.cassandra_retry_max_s),
        retriable=lambda exc: isinstance(exc, NoHostAvailable),
        on_retry=lambda _exc, delay: log.warning(
            "cassandra unreachable, retrying", extra={"retry_in_s": delay}
        ),
    )


def main() -> None:
    settings = ProcessorSettings()
    settings.tune_interpreter()
    loop = settings.install_event_loop()
    refuse_published_secrets(settings.profile, settings.published_secrets())
    configure_logging("processor", settings.log_level)
    session = _connect(settings)
    producer = AsyncProducer(settings.kafka.producer_config("processor"))
    processor = Processor.from_settings(settings, session, producer)
    app = create_app(settings, processor, processor.scheduler)
    level = settings.log_level.lower()
    faust_level = {"warning": "warn", "critical": "crit"}.get(level, level)
    # The worker's command line overrides the app's web settings, so say it here too.
    web = ["--web-port", str(settings.web_port)] if settings.web_port else ["--without-web"]
    sys.argv = [sys.argv[0], "--loop", loop, "worker", "-l", faust_level, *web]
    try:
        app.main()
    finally:
        producer.close()
        session.cluster.shutdown()


if __name__ == "__main__":
    main()
