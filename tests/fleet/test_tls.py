from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import Fleet


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_nodes_connect_over_wss_trusting_the_supervisor_certificate(fleet: Fleet, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    sup = await fleet.start_supervisor(tls={"cert": str(cert), "key": str(key)})
    node = await fleet.start_node("tls-node", supervisor_url=f"wss://127.0.0.1:{sup.ws_port}", ca_file=str(cert))
    assert node.connected.is_set() and sup.state.nodes["tls-node"].status == "online"
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "secure", "wait": True})
    assert started["output"]["reply"] == "You said: secure"
