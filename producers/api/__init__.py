"""The send API (the seed's "notification server"): an ASGI app, run by `python -m producers api`.

Every route but `/healthz`, `/openapi.json` and the public pages (`producers.pages`: signed
links and provider webhooks) needs an API client's app key and secret,
as `X-Herald-App-Key` + `X-Herald-App-Secret` headers or HTTP Basic. Errors are JSON
`{"error": <code>, "message": ..., "field": ...}`:

- 400 `invalid`: the input; `field` names it (`[2].user_id` inside a batch).
- 401 `unauthenticated`: missing or wrong key/secret. 403 `forbidden`: this client may not
  send as that source or that category, or lacks the `contacts:read`/`contacts:write` scope.
- 404 `not_found`: also for another client's notification, so none learns of another's.
- 409 `idempotency_key_reused`: this client already used the `Idempotency-Key` with another
  body (within 7 days).
- 413 `too_large`: the body. 429 `rate_limited` with `Retry-After` (seconds).
- 503 `unavailable` with `Retry-After`: Kafka or Cassandra did not answer; retry the same
  request (same `Idempotency-Key`), nothing is sent twice.

`POST /v1/notifications` answers 202 once the request is durably on Kafka (acks=all):
accepted for processing, not yet delivered. Event ids are `<client_id>:<Idempotency-Key>`
(or `<client_id>:<uuid>`), so keys are per client and the processor's dedup by event id
never lets one client's request suppress another's.
"""

from producers.api.app import ROUTES, create_app
from producers.api.auth import ApiError
from producers.api.intake import Intake

__all__ = ["ROUTES", "ApiError", "Intake", "create_app"]
