"""asyncua's own Server on a free 127.0.0.1 port with a few variables; stop, restart, set status."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.hw.modbus_server import free_port

NS_URI = "urn:linelight:test"
SERVER_URI = "urn:linelight:test-server"
# node id (in namespace 2), browse name, initial value, variant type
VARIABLES = [
    (1042, "Running", False, ua.VariantType.Boolean),
    ("Line.Speed", "Speed", 0.0, ua.VariantType.Double),
    ("Line.FaultCode", "FaultCode", 0, ua.VariantType.Int32),
    ("Lamp.Green", "GreenLamp", False, ua.VariantType.Boolean),
    ("Lamp.Red", "RedLamp", False, ua.VariantType.Boolean),
]


class OpcUaTestServer:
    """A server whose variables keep their values across stop/start (a server that only lost
    its network or was restarted), at `ns=2;i=1042`, `ns=2;s=Line.Speed` and so on."""

    def __init__(self, *, certificate: Path | None = None, private_key: Path | None = None,
                 users: dict[str, str] | None = None, subscriptions: bool = True,
                 policy: str = "Basic256Sha256_SignAndEncrypt") -> None:
        """With `certificate` and `private_key` only one secured endpoint is offered (`policy`,
        a ua.SecurityPolicyType name such as Aes256Sha256RsaPss_Sign); with `users` only those user names and passwords may log in; with
        `subscriptions=False` every CreateSubscription is refused (BadTooManySubscriptions),
        as by a server that cannot subscribe."""
        self.certificate, self.private_key, self.users = certificate, private_key, users
        self.subscriptions = subscriptions
        self.policy = policy
        self.port = free_port()
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}
        self.values: dict[str, Any] = {str(i): v for i, _, v, _ in VARIABLES}
        self.muted = False
        logging.getLogger("asyncua").setLevel(logging.ERROR)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = Server(user_manager=_Users(self.users) if self.users is not None else None)
        await server.init()
        server.set_endpoint(f"{self.endpoint}/")
        if self.certificate is not None and self.private_key is not None:
            await server.set_application_uri(SERVER_URI)
            server.set_security_policy([ua.SecurityPolicyType[self.policy]])
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
        idx = await server.register_namespace(NS_URI)
        line = await server.nodes.objects.add_object(idx, "Line")
        for ident, name, _, vtype in VARIABLES:
            node = await line.add_variable(ua.NodeId(ident, idx), name,
                                           ua.Variant(self.values[str(ident)], vtype))
            await node.set_writable()
            self.nodes[str(ident)] = node
        if not self.subscriptions:
            server.iserver.max_subscriptions = 0
        service = server.iserver.subscription_service
        create = service.create_subscription

        async def create_subscription(*args: Any, **kwargs: Any) -> Any:
            result = await create(*args, **kwargs)
            if self.muted:
                await _stop_publishing(service.subscriptions[result.SubscriptionId])
            return result

        service.create_subscription = create_subscription  # type: ignore[method-assign]
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            for ident, node in self.nodes.items():  # the value, whatever its status
                self.values[ident] = (await node.read_data_value(raise_on_bad_status=False)
                                      ).Value.Value
            await self.server.stop()
            self.server = None

    async def set(self, ident: str | int, value: Any,
                  status: int = ua.StatusCodes.Good) -> None:
        vtype = next(v for i, _, _, v in VARIABLES if str(i) == str(ident))
        await self.nodes[str(ident)].write_value(
            ua.DataValue(ua.Variant(value, vtype), StatusCode=ua.StatusCode(status)))

    async def get(self, ident: str | int) -> Any:
        return await self.nodes[str(ident)].read_value()

    async def mute_subscriptions(self, muted: bool = True) -> None:
        """A server whose publishing is stuck while its sessions answer every read: its
        subscriptions (and those created while muted) send nothing, not even keep-alives.
        `muted=False` starts them publishing again."""
        assert self.server is not None
        self.muted = muted
        for sub in list(self.server.iserver.subscription_service.subscriptions.values()):
            await (_stop_publishing(sub) if muted else sub.start())


async def _stop_publishing(sub: Any) -> None:
    """End an internal subscription's publishing loop, keeping it and its monitored items
    (InternalSubscription.stop would delete those too)."""
    task, sub._task = sub._task, None  # noqa: SLF001 - asyncua's server has no pause
    if task is not None:
        task.cancel()


class _Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


async def make_server_certificate(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed server certificate (DER) and key (PEM), as a server makes for itself."""
    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    await setup_self_signed_certificate(key, cert, SERVER_URI, "127.0.0.1",
                                        [ExtendedKeyUsageOID.SERVER_AUTH], {})
    return cert, key
