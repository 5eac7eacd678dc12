"""One error <-> status mapping: servers answer typed errors with their status, clients raise them back."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from lmdock.common import errors
from lmdock.common.grpc_errors import ErrorStatusInterceptor, TypedErrorsInterceptor

TYPED = [
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.PermissionDenied,
    errors.Unauthenticated,
    errors.ResourceExhausted,
    errors.FailedPrecondition,
    errors.IntegrityError,
    errors.BudgetExceeded,
    errors.ProfileMismatch,
]
SECRET = "payload 0.123456 must not leak"


def _failure(name: str) -> Exception:
    """The exception a handler raises for request `name`."""
    by_name = {cls.__name__: cls for cls in TYPED}
    return by_name[name](f"{name} happened") if name in by_name else RuntimeError(SECRET)


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"abort":
        context.abort(grpc.StatusCode.OUT_OF_RANGE, "the handler's own status")
    raise _failure(request.decode())


def _server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise _failure(request.decode())


def _client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    raise _failure(b"".join(requests).decode())


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    handlers = grpc.method_handlers_generic_handler(
        "test.Errors",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), interceptors=[ErrorStatusInterceptor("test")]
    )
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _calls(channel: grpc.Channel) -> dict[str, Callable[[str], object]]:
    return {
        "unary": lambda name: channel.unary_unary("/test.Errors/Unary")(name.encode(), timeout=10),
        "server stream": lambda name: list(
            channel.unary_stream("/test.Errors/ServerStream")(name.encode(), timeout=10)
        ),
        "client stream": lambda name: channel.stream_unary("/test.Errors/ClientStream")(
            iter([name[:2].encode(), name[2:].encode()]), timeout=10
        ),
    }


@pytest.mark.parametrize("kind", ["unary", "server stream", "client stream"])
@pytest.mark.parametrize("cls", TYPED, ids=lambda c: c.__name__)
def test_each_typed_error_gets_its_status_and_comes_back_typed(
    address: str, kind: str, cls: type[errors.LmdockError]
) -> None:
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as raw:
            _calls(channel)[kind](cls.__name__)
        assert raw.value.code().name == cls.status
        assert raw.value.details() == f"{cls.__name__} happened"
    typed_channel = grpc.intercept_channel(grpc.insecure_channel(address), TypedErrorsInterceptor())
    with typed_channel, pytest.raises(errors.LmdockError) as typed:
        _calls(typed_channel)[kind](cls.__name__)
    assert typed.value.status == cls.status and str(typed.value) == f"{cls.__name__} happened"
    assert type(typed.value) is type(errors.error_for_status(cls.status, ""))


@pytest.mark.parametrize("kind", ["unary", "server stream", "client stream"])
def test_an_unexpected_exception_is_internal_without_its_message(
    address: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="lmdock"),
        grpc.insecure_channel(address) as channel,
        pytest.raises(grpc.RpcError) as raw,
    ):
        _calls(channel)[kind]("crash")
    assert raw.value.code() == grpc.StatusCode.INTERNAL
    assert raw.value.details() == "internal error; the test's log has the details"
    assert [r.getMessage() for r in caplog.records] == ["internal error in handler: RuntimeError"]


def test_a_handler_that_aborts_keeps_its_own_status(address: str) -> None:
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raw:
        _calls(channel)["unary"]("abort")
    assert raw.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert raw.value.details() == "the handler's own status"


def test_a_status_without_a_class_keeps_its_name() -> None:
    err = errors.error_for_status("ABORTED", "conflict")
    assert type(err) is errors.LmdockError and err.status == "ABORTED"
