"""Proxies on the one upstream wire: ``HTTPS_PROXY`` through a ``CONNECT`` tunnel with
TLS to the origin inside it, ``HTTP_PROXY`` by forwarding, ``NO_PROXY``, credentials, a
proxy that refuses; each against a real loopback proxy (`tests.llm.loopback.Proxy`)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme
from tests.llm.loopback import Proxy as LoopbackProxy
from tests.llm.loopback import Upstream, answer, keep_alive, read_request

from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.providers._http import HttpClient
from corral.llm.providers._wire import Network, Origin, Proxies, Proxy, ProxyConfigError
from corral.llm.registry import ProviderBuildError, build_provider
from corral.llm.types import ChatRequest, Message
from corral.testing.fakes import FakeOpenAI


def test_proxy_variables_follow_the_curl_convention() -> None:
    proxies = Proxies.from_env({
        "HTTPS_PROXY": "http://ignored:1", "https_proxy": "http://alice:s%40cret@proxy.corp:3128",
        "ALL_PROXY": "proxy.corp:8080", "NO_PROXY": "localhost, .internal.corp,10.0.0.0/8,api.local:8443",
    })
    assert proxies.https == Proxy("proxy.corp", 3128, b"Basic YWxpY2U6c0BjcmV0")  # alice:s@cret, lower-case wins
    assert proxies.http == Proxy("proxy.corp", 8080)  # ALL_PROXY when HTTP_PROXY is unset
    routed = {
        host: proxies.for_origin(Origin(b"https", host.encode(), port)) is not None
        for host, port in [("api.openai.com", 443), ("localhost", 443), ("llm.internal.corp", 443),
                           ("internal.corp", 443), ("10.2.3.4", 443), ("11.2.3.4", 443), ("api.local", 443)]
    }
    assert routed == {"api.openai.com": True, "localhost": False, "llm.internal.corp": False,
                      "internal.corp": False, "10.2.3.4": False, "11.2.3.4": True, "api.local": True}
    assert proxies.for_origin(Origin(b"https", b"api.local", 8443)) is None  # host:port matches that port only
    assert Proxies.from_env({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}).for_origin(
        Origin(b"https", b"api.openai.com", 443)) is None
    assert Proxies.from_env({}) == Proxies()


def test_a_proxy_the_wire_cannot_speak_is_a_build_error() -> None:
    with pytest.raises(ProxyConfigError, match="HTTPS_PROXY: only http:// proxies"):
        Proxies.from_env({"HTTPS_PROXY": "socks5://127.0.0.1:1080"})
    with pytest.raises(ProviderBuildError, match="provider 'o': https_proxy: only http:// proxies are supported"):
        build_provider("o", ProviderConfig(type="openai", api_key="k"), env={"https_proxy": "https://p:1"})


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(authority: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return str(path)


async def tls_upstream(authority: trustme.CA, *names: str) -> Upstream:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*names).configure_cert(context)
    return await Upstream(keep_alive).start(context)


async def test_https_goes_through_one_connect_tunnel_with_tls_to_the_origin(authority: trustme.CA, ca_file: str) -> None:
    upstream = await tls_upstream(authority, "127.0.0.1")
    proxy = await LoopbackProxy().start()
    env = {"HTTPS_PROXY": f"http://bob:pw@127.0.0.1:{proxy.port}", "SSL_CERT_FILE": ca_file}
    http = HttpClient("up", ProviderConfig(type="openai"), base_url=f"https://127.0.0.1:{upstream.port}",
                      headers={}, api_key=None, network=Network.from_env(env))
    try:
        assert await http.request_json("POST", "/", json_body="abc") == {"echo": 5}
        assert await http.request_json("POST", "/", json_body="abcd") == {"echo": 6}
    finally:
        await http.aclose()
        await proxy.stop()
        await upstream.stop()
    authority_line = b"127.0.0.1:%d" % upstream.port
    assert proxy.heads == [b"CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic Ym9iOnB3\r\n\r\n"
                           % (authority_line, authority_line)]  # one tunnel, reused
    assert upstream.connections == 1


async def test_a_tunnel_verifies_the_origin_certificate_not_the_proxy(authority: trustme.CA, ca_file: str) -> None:
    upstream = await tls_upstream(authority, "other.example")  # a certificate for some other name
    proxy = await LoopbackProxy().start()
    env = {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": ca_file}
    http = HttpClient("up", ProviderConfig(type="openai"), base_url=f"https://127.0.0.1:{upstream.port}",
                      headers={}, api_key=None, network=Network.from_env(env))
    try:
        with pytest.raises(errors.UpstreamUnavailableError, match=r"TLS handshake with 127\.0\.0\.1"):
            await http.request_json("GET", "/")
        assert http.wire.open_connections() == 0
    finally:
        await http.aclose()
        await proxy.stop()
        await upstream.stop()


async def test_a_provider_without_a_base_url_reaches_its_preset_host_through_the_proxy(
        authority: trustme.CA, ca_file: str) -> None:
    """The registry reads the proxy and the trust from its environment: `openai` with no
    base URL goes to api.openai.com, here a loopback server with a certificate for that
    name, to which the proxy sends the tunnel."""
    seen: list[bytes] = []

    async def models(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        head, _ = await read_request(reader)
        seen.append(head.split(b"\r\n")[0] + b" " + head.split(b"\r\n")[1])
        writer.write(answer(b'{"object": "list", "data": [{"id": "m1", "owned_by": "x"}]}'))
        await writer.drain()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("api.openai.com").configure_cert(context)
    upstream = await Upstream(models).start(context)
    proxy = await LoopbackProxy(target=("127.0.0.1", upstream.port)).start()
    provider = build_provider("o", ProviderConfig(type="openai", api_key="k"),
                              env={"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": ca_file})
    try:
        listed = await provider.list_models()
    finally:
        await provider.aclose()
        await proxy.stop()
        await upstream.stop()
    assert [m.id for m in listed] == ["m1"]
    assert proxy.heads[0].startswith(b"CONNECT api.openai.com:443 HTTP/1.1\r\n")
    assert seen == [b"GET /v1/models HTTP/1.1 Host: api.openai.com"]


async def test_http_is_forwarded_with_an_absolute_target_to_a_fake_upstream() -> None:
    proxy = await LoopbackProxy().start()
    try:
        async with FakeOpenAI(api_key="sk-k") as fake:
            provider = build_provider("o", ProviderConfig(type="openai", base_url=fake.base_url, api_key="sk-k"),
                                      env={"http_proxy": f"http://carol:pw@127.0.0.1:{proxy.port}"})
            try:
                for text in ("one", "two"):
                    result = await provider.complete(ChatRequest(model="m", messages=[Message.text("user", text)]))
                    assert result.message.text_content == f"You said: {text}"
            finally:
                await provider.aclose()
            port = fake.port
    finally:
        await proxy.stop()
    request_line, _, rest = proxy.heads[0].partition(b"\r\n")
    assert request_line == b"POST http://127.0.0.1:%d/v1/chat/completions HTTP/1.1" % port
    assert rest.startswith(b"Proxy-Authorization: Basic Y2Fyb2w6cHc=\r\nHost: 127.0.0.1:%d\r\n" % port)
    assert len(proxy.heads) == 1  # the second request reused the connection to the proxy


async def test_no_proxy_goes_direct_and_a_refusing_proxy_is_a_typed_error() -> None:
    upstream = await Upstream(keep_alive).start()
    refusing = await LoopbackProxy(refuse=407).start()
    direct = HttpClient("up", ProviderConfig(type="openai"), base_url=f"http://127.0.0.1:{upstream.port}",
                        headers={}, api_key=None,
                        network=Network.from_env({"HTTP_PROXY": refusing.url, "NO_PROXY": "127.0.0.1"}))
    tunnelled = HttpClient("up", ProviderConfig(type="openai"), base_url=f"https://127.0.0.1:{upstream.port}",
                           headers={}, api_key=None, network=Network.from_env({"HTTPS_PROXY": refusing.url}))
    try:
        assert await direct.request_json("POST", "/", json_body=[]) == {"echo": 2}
        assert refusing.heads == []
        with pytest.raises(errors.UpstreamUnavailableError, match=r"proxy failure: .*refused CONNECT 127.0.0.1: "
                                                                    r"HTTP/1.1 407 Nope"):
            await tunnelled.request_json("GET", "/")
        assert tunnelled.wire.open_connections() == 0
    finally:
        await direct.aclose()
        await tunnelled.aclose()
        await refusing.stop()
        await upstream.stop()


def test_a_tunnel_on_uvloop(authority: trustme.CA, ca_file: str) -> None:
    """`corral serve` runs on uvloop: its `start_tls` upgrades the tunnel too."""
    import uvloop

    async def scenario() -> tuple[list[int], int]:
        upstream = await tls_upstream(authority, "127.0.0.1")
        proxy = await LoopbackProxy().start()
        env = {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": ca_file}
        http = HttpClient("up", ProviderConfig(type="openai"), base_url=f"https://127.0.0.1:{upstream.port}",
                          headers={}, api_key=None, network=Network.from_env(env))
        try:
            echoes = [(await http.request_json("POST", "/", json_body="x" * n))["echo"] for n in (1, 2)]
        finally:
            await http.aclose()
            await proxy.stop()
            await upstream.stop()
        return echoes, len(proxy.heads)

    assert uvloop.run(scenario()) == ([3, 4], 1)
