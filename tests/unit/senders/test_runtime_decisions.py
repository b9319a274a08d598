from __future__ import annotations

import httpx

from senders.decisions import Kind, classify, reason_of
from senders.providers.base import DeliveryError, PermanentError, RetriableError


def wrapped(cause: BaseException) -> DeliveryError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RetriableError("twilio:connection", provider="twilio") from inner
    except DeliveryError as exc:
        return exc


def test_permanent() -> None:
    assert classify(PermanentError("apns:400 BadDeviceToken", provider="apns")) is Kind.PERMANENT


def test_an_answer_from_the_provider_is_definite() -> None:
    assert classify(RetriableError("twilio:429", provider="twilio", status=429)) is Kind.DEFINITE
    assert classify(RetriableError("twilio:503", provider="twilio", status=503)) is Kind.DEFINITE


def test_connect_errors_are_definite_read_timeouts_ambiguous() -> None:
    assert classify(wrapped(httpx.ConnectError("refused"))) is Kind.DEFINITE
    assert classify(wrapped(ConnectionRefusedError())) is Kind.DEFINITE
    assert classify(wrapped(httpx.ReadTimeout("slow"))) is Kind.AMBIGUOUS
    assert classify(RetriableError("twilio:timeout", provider="twilio")) is Kind.AMBIGUOUS


def test_our_deadline_and_unknown_exceptions_are_ambiguous() -> None:
    assert classify(TimeoutError()) is Kind.AMBIGUOUS
    assert classify(RuntimeError("boom")) is Kind.AMBIGUOUS


def test_provider_can_say_so_itself() -> None:
    exc = RetriableError("smtp:timeout", provider="smtp")
    exc.ambiguous = False
    assert classify(exc) is Kind.DEFINITE


def test_reasons_are_short() -> None:
    assert reason_of(RetriableError("fcm:UNAVAILABLE", provider="fcm")) == "fcm:UNAVAILABLE"
    assert reason_of(TimeoutError()) == "timeout"
    assert reason_of(KeyError("x")) == "KeyError"
