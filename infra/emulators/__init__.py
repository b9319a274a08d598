"""Local stand-ins for the third-party providers, speaking and checking each real protocol.

APNs (HTTP/2 over TLS, ES256 JWT), FCM HTTP v1 (with its OAuth2 token endpoint), a
Twilio-compatible and a Vonage-compatible SMS API, SMTP, and a SendGrid-compatible email
API, plus a control API: the ledger of accepted messages and fault switches. For the demo,
the tests and the benchmarks (which use the lean variants of `lean.py`); see
docs/providers.md. Credentials under `dev-credentials/` are emulator-only.
"""
