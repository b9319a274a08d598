"""Intake: how notifications get into herald.

- `producers.publisher`: the producer library (`Publisher`, `AsyncPublisher`).
- `producers.request`: `NotificationRequest`, the model of the request record.
- `producers.contacts`: `Directory`, users' contacts, devices and preferences.
- `producers.api`: the authenticated HTTP send API (`python -m producers api`): `auth`
  (credentials, quotas, scopes, JSON errors), one module per resource (`notifications`,
  `users`, `schedules`, `templates`, `feed`), the shared state (`intake`) and the app.
- `producers.schedules`: recurring schedules and their firing loop
  (`python -m producers scheduler`).
- `producers.cli`: the `herald send | users | schedules | api-clients | api | scheduler` commands.
"""
